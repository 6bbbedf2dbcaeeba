//! The chat page's usage line (`static/usage.js`), in a real browser (see `browser.rs` for the
//! driver) against a real server with a token budget and a scripted model that reports usage:
//! after sign-in and after each run the line under the composer says what is used of the
//! budget and when it resets, fetched once per run's end (not on every event); from 80% of the
//! budget on it is a warning; once the budget is used up, a message is refused with
//! `budget_exceeded`, shown as a plain notice by the composer, and stays typed. On a server
//! without a history store the line stays hidden and nothing is said. Screenshots (1280 and
//! 420 px wide) go to the target directory's `browser-artifacts`.

use std::time::Duration;

use fantoccini::{Client, Locator};
use llm_agent::LlmConfig;
use serde_json::json;

use crate::approvals::{sqlite, store_dir};
use crate::browser::{
    NO_SIDEWAYS_SCROLL, artifact, browser, js, sign_in, start, wait_js, wait_newest_run, wait_value,
};
use crate::llm::{DONE, Model, Reply, content, usage};
use crate::server_support::start_server;

/// The usage line: [shown, text, level].
const LINE: &str = "const u = document.getElementById('usage'); \
    return [u.offsetParent !== null, u.textContent, u.dataset.level || null]";

/// An answer that used `prompt` and `completion` tokens.
fn answer(prompt: u64, completion: u64) -> Reply {
    Reply::Stream(vec![content("ok"), usage(prompt, completion), DONE])
}

/// `n` as the page writes a count: in the browser's locale, with its thousands separators.
async fn grouped(client: &Client, n: u64) -> String {
    let text = js(client, &format!("return ({n}).toLocaleString()")).await;
    text.as_str().unwrap().to_owned()
}

/// Asks the `llm` agent `message` and waits until its run completed.
async fn ask(client: &Client, message: &str) {
    start(client, "llm", message, None).await;
    wait_newest_run(client, "completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_line_counts_runs_warns_near_the_budget_and_a_spent_budget_keeps_the_message() {
    // 1,500, then 2,500 (4,000 of 5,000: 80%, a warning), then 1,500 more (over: a run whose
    // call fits when it starts runs to its end). Each call first reserves its prompt's
    // estimate (some 660 tokens for the `llm` agent's tools and messages) and a short answer
    // at least: the 1,000 tokens left before the third run hold that, so it does not wait.
    let model = Model::start(vec![
        answer(1_000, 500),
        answer(2_000, 500),
        answer(1_000, 500),
    ])
    .await;
    let base = format!("http://{}/v1", model.addr);
    let dir = store_dir();
    let store = sqlite(&dir);
    let server = start_server(move |c| {
        c.jwt_secret = None;
        c.store = Some(store);
        c.start_rate_per_minute = 1_000;
        c.llm = Some(LlmConfig::new(base, "test-model"));
        c.budget.tokens = Some(5_000);
    })
    .await;
    let b = browser().await;
    b.client.set_window_size(1280, 900).await.unwrap();
    sign_in(&b.client, server.addr(), "alice").await;

    // Before any run: the budget, nothing used, and when it resets (in the reader's time).
    wait_js(
        &b.client,
        "the usage line is fetched after sign-in",
        "return !!window.usage.last",
    )
    .await;
    let last = js(&b.client, "return window.usage.last").await;
    assert_eq!(last["period"], "month", "{last}");
    assert!(
        last["resets_at"]
            .as_str()
            .unwrap()
            .ends_with("-01T00:00:00Z"),
        "{last}"
    );
    let resets = js(
        &b.client,
        "return new Date(window.usage.last.resets_at).toLocaleDateString(undefined, { month: 'short', day: 'numeric' })",
    )
    .await;
    let resets = resets.as_str().unwrap().to_owned();
    let limit = grouped(&b.client, 5_000).await;
    assert_eq!(
        js(&b.client, LINE).await,
        json!([
            true,
            format!("0 of {limit} tokens this month · resets {resets}"),
            null
        ])
    );

    // A run that reports 1,500 tokens: the line says so once the run ended, fetched once for
    // it.
    ask(&b.client, "first question").await;
    wait_value(
        &b.client,
        "the line counts the first run",
        LINE,
        json!([
            true,
            format!(
                "{} of {limit} tokens this month · resets {resets}",
                grouped(&b.client, 1_500).await
            ),
            null
        ]),
    )
    .await;
    let fetches = js(&b.client, "return window.usage.stats.fetches").await;
    assert_eq!(
        fetches, 2,
        "one fetch at sign-in and one after the run, not one per event"
    );
    artifact(&b.client, "usage-quiet.png").await;

    // 4,000 of 5,000: a warning, in amber.
    ask(&b.client, "second question").await;
    wait_value(
        &b.client,
        "the line warns at 80% of the budget",
        LINE,
        json!([
            true,
            format!(
                "{} of {limit} tokens this month · resets {resets}",
                grouped(&b.client, 4_000).await
            ),
            "warn"
        ]),
    )
    .await;
    let colors = js(
        &b.client,
        "const s = getComputedStyle(document.getElementById('usage')); return [s.color, s.backgroundColor]",
    )
    .await;
    assert_eq!(
        colors,
        json!(["rgb(138, 75, 0)", "rgb(255, 244, 229)"]),
        "amber"
    );
    artifact(&b.client, "usage-warning.png").await;
    b.client.set_window_size(420, 900).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(js(&b.client, NO_SIDEWAYS_SCROLL).await, 0);
    assert_eq!(js(&b.client, LINE).await[0], true);
    artifact(&b.client, "usage-warning-narrow.png").await;

    // A run whose call fits in what remains (1,000 tokens: more than its prompt's estimate and
    // a short answer) runs to its end, without waiting, and passes the budget (the scripted
    // model answers longer than the `max_tokens` it was asked for).
    ask(&b.client, "third question").await;
    assert_eq!(
        js(
            &b.client,
            "return document.querySelectorAll('.budget-wait').length"
        )
        .await,
        0,
        "the third run did not wait for the budget"
    );
    let asked = model.requests()[2].1["max_tokens"].as_u64().unwrap();
    assert!((16..1_000).contains(&asked), "{asked}");
    wait_value(
        &b.client,
        "the line says the budget is used up",
        LINE,
        json!([
            true,
            format!(
                "{} of {limit} tokens this month: used up · resets {resets}",
                grouped(&b.client, 5_500).await
            ),
            "out"
        ]),
    )
    .await;

    // The next message is refused: a plain notice by the composer, the message kept, no run.
    let field = b.client.find(Locator::Id("message")).await.unwrap();
    field.send_keys("fourth question").await.unwrap();
    field.send_keys("\u{E007}").await.unwrap();
    wait_js(
        &b.client,
        "the refusal shows by the composer",
        "return !document.getElementById('composer-notice').hidden",
    )
    .await;
    let notice = js(
        &b.client,
        "const n = document.getElementById('composer-notice'); return [n.textContent, n.dataset.kind]",
    )
    .await;
    let text = notice[0].as_str().unwrap();
    let resets_at = js(
        &b.client,
        "return new Date(window.usage.last.resets_at).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })",
    )
    .await;
    assert_eq!(
        text,
        format!(
            "Your token budget for this month is used up: 5500 of 5000 tokens used, 0 remaining. \
             It resets {}. Your message is still here: send it again once the budget resets, or \
             ask the server's operator for a larger budget.",
            resets_at.as_str().unwrap()
        )
    );
    assert_eq!(notice[1], "budget");
    assert_eq!(
        js(&b.client, "return document.getElementById('message').value").await,
        "fourth question"
    );
    assert_eq!(
        js(
            &b.client,
            "return document.querySelectorAll('#conversation > .run').length"
        )
        .await,
        3,
        "the refused message started no run"
    );
    assert_eq!(
        js(
            &b.client,
            "return document.getElementById('notices').children.length"
        )
        .await,
        0,
        "nothing said at the top"
    );
    assert_eq!(js(&b.client, NO_SIDEWAYS_SCROLL).await, 0);
    artifact(&b.client, "usage-refused-narrow.png").await;
    b.client.set_window_size(1280, 900).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    artifact(&b.client, "usage-refused.png").await;
    assert_eq!(
        model.requests().len(),
        3,
        "the refused message never reached the model"
    );

    // What the line says without a budget: what was used, with dollars when a call was priced.
    let unbudgeted = js(
        &b.client,
        "const t = window.usage.text; const none = { used: 0, limit: null, remaining: null }; \
         return [ \
           t({ period: 'month', tokens: { used: 1234, limit: null, remaining: null }, cost_usd: none, calls: 3, unpriced_calls: 3 }), \
           t({ period: 'week', tokens: { used: 1234, limit: null, remaining: null }, cost_usd: { used: 0.15, limit: null, remaining: null }, calls: 3, unpriced_calls: 0 }), \
           t({ period: 'day', tokens: { used: 0, limit: null, remaining: null }, cost_usd: none, calls: 0, unpriced_calls: 0 }), \
           (1234).toLocaleString()]",
    )
    .await;
    let n = unbudgeted[3].as_str().unwrap();
    assert_eq!(
        unbudgeted,
        json!([
            format!("Used {n} tokens this month"),
            format!("Used {n} tokens · $0.15 this week"),
            "",
            n
        ])
    );

    // Signing out hides the line.
    b.client
        .find(Locator::Id("signout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_value(
        &b.client,
        "the line goes with the session",
        LINE,
        json!([false, "", null]),
    )
    .await;
    drop(b);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_the_usage_line_stays_hidden_and_nothing_is_said() {
    let server = start_server(|c| c.jwt_secret = None).await;
    let b = browser().await;
    b.client.set_window_size(420, 900).await.unwrap();
    sign_in(&b.client, server.addr(), "alice").await;
    wait_js(
        &b.client,
        "the page asked once and learnt the server counts no usage",
        "return window.usage.off === true && window.usage.stats.fetches === 1",
    )
    .await;
    start(
        &b.client,
        "synthetic",
        "hello",
        Some(r#"{"chunks":2,"sleep_ms":10}"#),
    )
    .await;
    wait_newest_run(&b.client, "completed").await;
    // Longer than the page waits after a run's end before it would fetch.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        js(&b.client, "return window.usage.stats.fetches").await,
        1,
        "not asked again"
    );
    assert_eq!(js(&b.client, LINE).await, json!([false, "", null]));
    assert_eq!(
        js(
            &b.client,
            "return document.getElementById('notices').children.length"
        )
        .await,
        0
    );
    server.shutdown().await;
}
