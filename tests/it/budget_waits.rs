//! A run whose next model call would pass its user's budget pauses instead of failing
//! (`budget_exhausted`, status `waiting_for_budget`), keeping everything it streamed; it goes
//! on by itself when the limit is raised (a token with a higher plan, or a restart with a
//! higher limit, on the user's next request), and a cancel while it waits ends it cleanly. Each model call asks for no
//! more than what remains (`max_tokens`).

use core_context::lifecycle::check_lifecycle;
use llm_agent::LlmConfig;
use serde_json::{Value, json};

use crate::approvals::{sqlite, store_dir};
use crate::history::TempDir;
use crate::history_server::{eventually, http};
use crate::llm::{DONE, Model, Reply, content, tool_piece, usage};
use crate::multitask::{ask, until_ended};
use crate::server_support::{Client, SECRET, now_secs, start_server, token_with};

/// Each model call here uses 2,000 tokens.
pub(crate) const PER_CALL: u64 = 2_000;
/// Two calls fit, and then fewer tokens remain than any call needs (16 answer tokens).
pub(crate) const BUDGET: u64 = 2 * PER_CALL + 10;

/// A turn that calls the calculator, then one that calls it again, then the answer; each
/// reports `PER_CALL` tokens.
pub(crate) fn three_turns() -> Vec<Reply> {
    let tool_turn = |id: &str| {
        Reply::Stream(vec![
            tool_piece(0, Some(id), Some("calculator"), r#"{"expression": "2+2"}"#),
            usage(PER_CALL / 2, PER_CALL / 2),
            DONE,
        ])
    };
    vec![
        tool_turn("call_1"),
        tool_turn("call_2"),
        Reply::Stream(vec![
            content("four, twice"),
            usage(PER_CALL / 2, PER_CALL / 2),
            DONE,
        ]),
    ]
}

/// A server with a history store in `dir`, the `llm` agent on `model`, and a budget of
/// `tokens`.
pub(crate) async fn server(
    dir: &TempDir,
    model: &Model,
    tokens: u64,
) -> agent_server::server::RunningServer {
    let store = sqlite(dir);
    let url = format!("http://{}/v1", model.addr);
    start_server(move |config| {
        config.store = Some(store);
        config.llm = Some(LlmConfig::new(url, "test-model"));
        config.budget.tokens = Some(tokens);
    })
    .await
}

/// A token for `user` whose plan allows `tokens` per period.
pub(crate) fn plan(user: &str, tokens: u64) -> String {
    token_with(
        json!({"sub": user, "exp": now_secs() + 600,
               "agent_engine_budget": {"tokens": tokens}}),
        SECRET,
    )
}

/// Starts the `llm` run and reads its events until it waits for its budget; returns the run
/// id and the events read.
async fn until_it_waits(client: &mut Client) -> (String, Vec<Value>) {
    client
        .send(ask("llm", "add it up twice", json!({}), None, None))
        .await;
    let accepted = client.reply().await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let run = accepted["run_id"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    loop {
        let frame = client.next().await;
        if frame.get("seq").is_none() {
            continue;
        }
        let waits = frame["type"] == "budget_exhausted";
        assert!(
            !matches!(
                frame["type"].as_str(),
                Some("agent_completed" | "agent_error" | "agent_cancelled")
            ),
            "the run ended instead of waiting: {frame}"
        );
        seen.push(frame);
        if waits {
            return (run, seen);
        }
    }
}

/// The history's status of `user`'s run `run`, once it is `status`.
pub(crate) async fn status_becomes(
    addr: std::net::SocketAddr,
    user: &str,
    run: &str,
    status: &str,
) {
    eventually(addr, &format!("/v1/runs/{run}"), user, |body| {
        body["status"] == status
    })
    .await;
}

fn lifecycle(frames: &[Value]) -> core_context::lifecycle::LifecycleSummary {
    let events: Vec<core_context::AgentEvent> = frames
        .iter()
        .map(|f| serde_json::from_value(f.clone()).unwrap())
        .collect();
    check_lifecycle(&events).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_crosses_its_budget_waits_and_goes_on_when_its_plan_is_raised() {
    let model = Model::start(three_turns()).await;
    let dir = store_dir();
    let node = server(&dir, &model, 100_000).await;
    let addr = node.addr();
    let mut carol = Client::connect(addr, &plan("carol", BUDGET), None)
        .await
        .unwrap();
    let (run, mut seen) = until_it_waits(&mut carol).await;
    let waited = seen.last().unwrap().clone();
    assert_eq!(waited["data"]["budget"], "tokens", "{waited}");
    assert_eq!(waited["data"]["used"], 2 * PER_CALL, "{waited}");
    assert_eq!(waited["data"]["limit"], BUDGET, "{waited}");
    assert!(
        waited["data"]["resets_at"]
            .as_str()
            .unwrap()
            .contains("-01T00:00:00"),
        "a new month: {waited}"
    );
    // Both tool calls ran and were streamed before it paused.
    let done_tools = seen
        .iter()
        .filter(|f| f["type"] == "tool_completed")
        .count();
    assert_eq!(done_tools, 2, "{seen:?}");
    assert_eq!(model.requests().len(), 2, "the third call was never made");
    status_becomes(addr, "carol", &run, "waiting_for_budget").await;
    let (_, used) = http(addr, "GET", "/v1/me/usage", Some("carol")).await;
    assert_eq!(used["tokens"]["used"], 2 * PER_CALL, "{used}");

    // Each call asked for no more than what remained after its prompt.
    let asked: Vec<u64> = model
        .requests()
        .iter()
        .map(|(_, body)| body["max_tokens"].as_u64().expect("max_tokens is set"))
        .collect();
    assert!(asked[0] < BUDGET && asked[0] > 16, "{asked:?}");
    assert!(asked[1] < BUDGET - PER_CALL && asked[1] >= 16, "{asked:?}");

    // Her identity provider raises her plan: her next request brings it, and the run goes
    // on by itself in the same stream.
    let raised = crate::support::http_client()
        .get(format!("http://{addr}/v1/me/usage"))
        .bearer_auth(plan("carol", 100_000))
        .send()
        .await
        .unwrap();
    assert_eq!(raised.status().as_u16(), 200);
    let rest = until_ended(&mut carol, &[&run]).await;
    let end = rest.last().unwrap();
    assert_eq!(end["type"], "agent_completed", "{end}");
    assert_eq!(end["data"]["result"], "four, twice", "{end}");
    assert!(
        !rest
            .iter()
            .any(|f| f["type"] == "agent_started" && f["run_id"] == run.as_str()),
        "a resumed run does not start again"
    );
    seen.extend(rest);
    let summary = lifecycle(&seen);
    assert_eq!((summary.completed, summary.paused), (1, 0), "{summary:?}");
    assert_eq!(model.requests().len(), 3);
    status_becomes(addr, "carol", &run, "completed").await;
    // The history keeps the wait between the two halves.
    let (_, stored) = http(addr, "GET", &format!("/v1/runs/{run}"), Some("carol")).await;
    let types: Vec<&str> = stored["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    let waited_at = types.iter().position(|t| *t == "budget_exhausted").unwrap();
    assert_eq!(types.last(), Some(&"agent_completed"), "{types:?}");
    assert!(waited_at > 0 && waited_at < types.len() - 1, "{types:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_its_budget_is_cancelled_cleanly() {
    let model = Model::start(three_turns()).await;
    let dir = store_dir();
    let node = server(&dir, &model, BUDGET).await;
    let addr = node.addr();
    let mut alice = Client::user(addr, "alice").await;
    let (run, mut seen) = until_it_waits(&mut alice).await;
    status_becomes(addr, "alice", &run, "waiting_for_budget").await;
    alice
        .send(json!({"type": "cancel_run", "request_id": "stop", "payload": {"run_id": run}}))
        .await;
    let rest = until_ended(&mut alice, &[&run]).await;
    assert_eq!(rest.last().unwrap()["type"], "agent_cancelled", "{rest:?}");
    seen.extend(rest);
    assert_eq!(lifecycle(&seen).cancelled, 1);
    status_becomes(addr, "alice", &run, "cancelled").await;
    assert_eq!(model.requests().len(), 2, "no call after the pause");
    let metrics = crate::support::metrics_text(addr).await;
    for line in [
        "agent_server_budget_waits_total{budget=\"tokens\"} 1",
        "agent_server_budget_waits_total{budget=\"cost_usd\"} 0",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    // Another user has a budget of his own: his run makes its call at once.
    let mut bob = Client::user(addr, "bob").await;
    bob.send(ask("llm", "hello", json!({}), None, None)).await;
    let accepted = bob.reply().await;
    let bobs = accepted["run_id"].as_str().unwrap().to_owned();
    let end = until_ended(&mut bob, &[&bobs]).await;
    assert_eq!(end.last().unwrap()["type"], "agent_completed", "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_higher_limit_lets_a_waiting_run_go_on() {
    let model = Model::start(three_turns()).await;
    let dir = store_dir();
    let first = server(&dir, &model, BUDGET).await;
    let mut alice = Client::user(first.addr(), "alice").await;
    let (run, _) = until_it_waits(&mut alice).await;
    status_becomes(first.addr(), "alice", &run, "waiting_for_budget").await;
    first.shutdown().await;

    // Still waiting after a restart with the same limit, once she is back...
    let same = server(&dir, &model, BUDGET).await;
    let (_, used) = http(same.addr(), "GET", "/v1/me/usage", Some("alice")).await;
    assert_eq!(used["tokens"]["used"], 2 * PER_CALL, "{used}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let path = format!("/v1/runs/{run}");
    let (_, stored) = http(same.addr(), "GET", &path, Some("alice")).await;
    assert_eq!(stored["status"], "waiting_for_budget", "{stored}");
    same.shutdown().await;

    // ...and going on, to its end, after one with a higher limit, on her next request (a
    // node goes by the budget of a user it has seen since it started: another node may know
    // a plan of hers that it does not).
    let raised = server(&dir, &model, 3 * BUDGET).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, stored) = http(raised.addr(), "GET", &path, Some("alice")).await;
    assert_eq!(
        stored["status"], "waiting_for_budget",
        "not before she is back: {stored}"
    );
    // Her socket brings her token (the run may go on before the socket joins her stream:
    // the history says how it ended).
    let _back = Client::user(raised.addr(), "alice").await;
    status_becomes(raised.addr(), "alice", &run, "completed").await;
    assert_eq!(model.requests().len(), 3);
    let (_, stored) = http(
        raised.addr(),
        "GET",
        &format!("/v1/runs/{run}"),
        Some("alice"),
    )
    .await;
    let last = stored["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "agent_completed", "{last}");
}
