//! What users' runs may spend: with a scripted model that reports usage, each model call is
//! counted once in the history; a token budget (and a cost budget, priced by the model price
//! table) refuses a user's next run with `budget_exceeded` once used up, over the socket and
//! AG-UI (429), while another user is unaffected; the count outlives a restart (SQLite);
//! `GET /v1/me/usage` says what is used, allowed and when it resets.

use llm_agent::LlmConfig;
use serde_json::{Value, json};

use crate::approvals::{sqlite, store_dir};
use crate::history::TempDir;
use crate::history_server::http;
use crate::llm::{DONE, Model, Reply, content, usage};
use crate::multitask::{ask, until_ended};
use crate::server_support::{Client, start_server, token};

/// An answer that used 1,000 prompt and 500 answer tokens (a call's prompt here, the
/// `llm` agent's tools with the message, is estimated at several hundred tokens: a budget
/// must hold at least one).
fn answer() -> Reply {
    Reply::Stream(vec![content("ok"), usage(1_000, 500), DONE])
}

async fn server(
    dir: &TempDir,
    model: &Model,
    tune: impl FnOnce(&mut agent_server::config::ServerConfig) + Send + 'static,
) -> agent_server::server::RunningServer {
    let store = sqlite(dir);
    let url = format!("http://{}/v1", model.addr);
    start_server(move |config| {
        config.store = Some(store);
        config.start_rate_per_minute = 10_000;
        config.llm = Some(LlmConfig::new(url, "test-model"));
        tune(config);
    })
    .await
}

/// Asks the `llm` agent; the run's terminal event, or the refusal.
async fn run(client: &mut Client, message: &str) -> Value {
    client
        .send(ask("llm", message, json!({}), None, None))
        .await;
    let reply = client.reply().await;
    if reply["type"] != "run_accepted" {
        return reply;
    }
    let run = reply["run_id"].as_str().unwrap().to_owned();
    until_ended(client, &[&run]).await.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_budget_refuses_the_run_after_it_is_used_up_and_outlives_a_restart() {
    let model = Model::start(vec![answer(), answer(), answer(), answer()]).await;
    let dir = store_dir();
    let budget = |config: &mut agent_server::config::ServerConfig| {
        config.budget.tokens = Some(3_000);
    };
    let first = server(&dir, &model, budget).await;
    let addr = first.addr();
    let mut alice = Client::user(addr, "alice").await;
    for n in 0..2 {
        let end = run(&mut alice, &format!("question {n}")).await;
        assert_eq!(end["type"], "agent_completed", "{end}");
    }
    let refused = run(&mut alice, "one more").await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "budget_exceeded", "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("3000 of 3000 tokens used, 0 remaining"),
        "{message}"
    );
    assert!(message.contains("it resets at 20"), "{message}");
    // The refusal says it in fields too: the budget, nothing remaining, when it resets.
    assert_eq!(refused["budget"], "tokens", "{refused}");
    assert_eq!(refused["remaining"], 0, "{refused}");
    let resets_at = refused["resets_at"].as_str().unwrap();
    assert!(resets_at.ends_with("-01T00:00:00.000000Z"), "{refused}");

    let (status, used) = http(addr, "GET", "/v1/me/usage", Some("alice")).await;
    assert_eq!(status, 200, "{used}");
    assert_eq!(used["period"], "month");
    assert_eq!(
        used["tokens"],
        json!({"used": 3_000, "limit": 3_000, "remaining": 0})
    );
    assert_eq!(used["calls"], 2);
    assert_eq!(used["unpriced_calls"], 2);
    assert!(
        used["resets_at"]
            .as_str()
            .unwrap()
            .ends_with("-01T00:00:00Z"),
        "{used}"
    );

    // Another user has a budget of their own.
    let mut bob = Client::user(addr, "bob").await;
    let end = run(&mut bob, "hello").await;
    assert_eq!(end["type"], "agent_completed", "{end}");
    let (_, bobs) = http(addr, "GET", "/v1/me/usage", Some("bob")).await;
    assert_eq!(bobs["tokens"]["used"], 1_500, "{bobs}");

    // AG-UI is refused as well: 429.
    let refused = crate::support::http_client()
        .post(format!("http://{addr}/agui/llm"))
        .bearer_auth(token("alice"))
        .json(
            &json!({"threadId": "t", "runId": "r", "tools": [], "context": [],
                      "messages": [{"id": "m1", "role": "user", "content": "more"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "budget_exceeded", "{body}");
    assert_eq!(
        (
            &body["budget"],
            &body["remaining"],
            body["resets_at"].as_str()
        ),
        (&json!("tokens"), &json!(0), Some(resets_at)),
        "{body}"
    );
    first.shutdown().await;

    // The count is in the history: a restarted server still refuses.
    let second = server(&dir, &model, budget).await;
    let mut alice = Client::user(second.addr(), "alice").await;
    let refused = run(&mut alice, "after the restart").await;
    assert_eq!(refused["code"], "budget_exceeded", "{refused}");
    let (_, used) = http(second.addr(), "GET", "/v1/me/usage", Some("alice")).await;
    assert_eq!(used["tokens"]["used"], 3_000, "{used}");
    assert_eq!(
        model.requests().len(),
        3,
        "the refused runs never reached the model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_budget_counts_priced_calls() {
    let big = || Reply::Stream(vec![content("ok"), usage(10_000, 5_000), DONE]);
    let model = Model::start(vec![big(), big(), big()]).await;
    let dir = store_dir();
    let priced = |config: &mut agent_server::config::ServerConfig| {
        // $10 per million tokens: each answer (15,000 tokens) costs $0.15.
        config.prices = run_service::usage::Prices::parse(&["test-model=10/10".into()]).unwrap();
        config.budget.cost_micro_usd = Some(200_000);
        config.budget.period = run_service::usage::Period::Day;
    };
    let server = server(&dir, &model, priced).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    assert_eq!(run(&mut alice, "one").await["type"], "agent_completed");
    let (_, used) = http(addr, "GET", "/v1/me/usage", Some("alice")).await;
    assert_eq!(used["period"], "day");
    assert_eq!(used["cost_usd"]["used"], 0.15, "{used}");
    assert_eq!(used["cost_usd"]["limit"], 0.2, "{used}");
    assert_eq!(used["unpriced_calls"], 0);
    // Under the budget when it starts: it runs, its call asking for no more than what
    // remains (`max_tokens`); this scripted model answers with 15,000 tokens anyway.
    assert_eq!(run(&mut alice, "two").await["type"], "agent_completed");
    let refused = run(&mut alice, "three").await;
    assert_eq!(refused["code"], "budget_exceeded", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("$0.3000 of $0.20 spent"),
        "{refused}"
    );
    // Counted by model, with no user in the labels.
    let metrics = crate::support::metrics_text(addr).await;
    for line in [
        "agent_server_model_usage_tokens_total{model=\"test-model\",kind=\"prompt\"} 20000",
        "agent_server_model_usage_tokens_total{model=\"test-model\",kind=\"completion\"} 10000",
        "agent_server_model_cost_usd_total{model=\"test-model\"} 0.3",
        "agent_server_refusals_total{code=\"budget_exceeded\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
}

/// The reference AG-UI client reads the run's usage on `RUN_FINISHED`, and the call counts
/// toward the user's usage like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agui_run_finished_carries_the_runs_usage() {
    let model = Model::start(vec![answer()]).await;
    let dir = store_dir();
    let server = server(&dir, &model, |_| {}).await;
    let addr = server.addr();
    let seen = crate::agui_client::run(addr, "llm", Some("alice"), "hello", json!({}), "").await;
    assert!(seen.end.get("done").is_some(), "{}", seen.end);
    let finished = seen
        .events
        .iter()
        .find(|e| e["type"] == "RUN_FINISHED")
        .expect("RUN_FINISHED");
    let usage = finished["usage"].to_string();
    assert!(
        usage.contains("1000") && usage.contains("500"),
        "{finished}"
    );
    let (_, used) = http(addr, "GET", "/v1/me/usage", Some("alice")).await;
    assert_eq!(used["tokens"]["used"], 1_500, "{used}");
    assert_eq!(used["tokens"]["limit"], Value::Null, "no budget: {used}");
}

/// A token's `agent_engine_budget` claim gives its user limits of their own (an identity
/// provider's plans), from the request that carried it on; a malformed claim is refused by
/// name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_plan_claim_sets_its_users_budget() {
    use crate::server_support::{SECRET, now_secs, token_with};
    let model = Model::start(vec![answer(), answer()]).await;
    let dir = store_dir();
    let server = server(&dir, &model, |config| config.budget.tokens = Some(10_000)).await;
    let addr = server.addr();
    let plan = |claim: Value| {
        token_with(
            json!({"sub": "carol", "exp": now_secs() + 600, "agent_engine_budget": claim}),
            SECRET,
        )
    };
    let small = plan(json!({"tokens": 1_500}));
    let mut carol = Client::connect(addr, &small, None).await.unwrap();
    assert_eq!(run(&mut carol, "one").await["type"], "agent_completed");
    let refused = run(&mut carol, "two").await;
    assert_eq!(refused["code"], "budget_exceeded", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("1500 of 1500 tokens"),
        "{refused}"
    );
    let used = crate::support::http_client()
        .get(format!("http://{addr}/v1/me/usage"))
        .bearer_auth(&small)
        .send()
        .await
        .unwrap();
    let used: Value = used.json().await.unwrap();
    assert_eq!(
        used["tokens"],
        json!({"used": 1_500, "limit": 1_500, "remaining": 0})
    );
    // A token without the claim gives the server's budget back.
    let (_, plain) = http(addr, "GET", "/v1/me/usage", Some("carol")).await;
    assert_eq!(plain["tokens"]["limit"], 10_000, "{plain}");
    // A malformed claim is refused, naming it.
    let bad = plan(json!({"tokens": -5}));
    let refused = crate::support::http_client()
        .get(format!("http://{addr}/v1/me/usage"))
        .bearer_auth(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("agent_engine_budget"),
        "{body}"
    );
    assert!(
        Client::connect(addr, &bad, None).await.is_err(),
        "the socket refuses it too"
    );
}
