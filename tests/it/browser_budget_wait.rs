//! A run that waits for its user's budget (`budget_exhausted`) in the chat page, in a real
//! browser (see `browser.rs` for the driver) against a real server with a token budget and a
//! scripted model: the run's second tool-calling turn leaves less than its next call needs,
//! so the run pauses; the page shows, where it paused, a plain notice with what is used of
//! what and when the budget resets, and a Cancel button; the run shows as waiting and the
//! usage line is fetched again. A reload shows the same notice from the history; Cancel
//! ends the run (cancelled), and the notice becomes a quiet line. When the user's plan is
//! raised the run goes on by itself, in the same view, to its answer. Screenshots (1280 and
//! 420 px wide) go to the target directory's `browser-artifacts`.

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::json;

use crate::approvals::store_dir;
use crate::browser::{
    NO_SIDEWAYS_SCROLL, artifact, browser, js, sign_in_as, start, wait_js, wait_newest_run,
    wait_value,
};
use crate::budget_waits::{BUDGET, PER_CALL, server, three_turns};
use crate::history_server::eventually;
use crate::llm::Model;
use crate::server_support::{SECRET, now_secs, token, token_with};

/// The newest run's budget notice: its status, its words, its buttons, the run's state and
/// the state it shows, and how many such notices the run has.
const WAIT: &str = "const runs = document.querySelectorAll('#conversation > .run'); \
    const run = runs[runs.length - 1]; const w = run && run.querySelector('.budget-wait'); \
    if (!w) return null; \
    return {status: w.dataset.status, text: w.querySelector('.budget-wait-text').textContent, \
      buttons: [...w.querySelectorAll('button')].map(b => b.textContent), \
      run: run.dataset.state, shows: run.querySelector('.run-state').textContent, \
      notices: run.querySelectorAll('.budget-wait').length}";

/// The usage line: [shown, text, level].
const LINE: &str = "const u = document.getElementById('usage'); \
    return [u.offsetParent !== null, u.textContent, u.dataset.level || null]";

/// `n` as the page writes a count: in the browser's locale, with its thousands separators.
async fn grouped(client: &Client, n: u64) -> String {
    let text = js(client, &format!("return ({n}).toLocaleString()")).await;
    text.as_str().unwrap().to_owned()
}

/// What the notice says while the run waits, with the numbers and the reset time as the
/// browser writes them (the budget's period is a month).
async fn paused_words(client: &Client) -> String {
    let when = js(
        client,
        "return new Date(window.usage.last.resets_at).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })",
    )
    .await;
    format!(
        "Paused: your token budget for this month is used up ({} of {} tokens). This run goes on \
         by itself when the budget resets on {}, or when your limit is raised.",
        grouped(client, 2 * PER_CALL).await,
        grouped(client, BUDGET).await,
        when.as_str().unwrap()
    )
}

/// Starts the `llm` run and waits until the page shows it waiting for the budget.
async fn until_it_waits(client: &Client) {
    wait_js(
        client,
        "the usage line is fetched after sign-in",
        "return !!window.usage.last",
    )
    .await;
    start(client, "llm", "add it up twice", None).await;
    wait_js(
        client,
        "the run waits for the budget",
        "const runs = document.querySelectorAll('#conversation > .run'); \
         const w = runs.length && runs[runs.length - 1].querySelector('.budget-wait'); \
         return !!w && w.dataset.status === 'waiting'",
    )
    .await;
}

/// The newest run's id, as the page knows it.
async fn newest_run_id(client: &Client) -> String {
    let id = js(
        client,
        "const runs = document.querySelectorAll('#conversation > .run'); return runs[runs.length - 1].dataset.runId",
    )
    .await;
    id.as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_its_budget_says_so_plainly_and_its_cancel_ends_it() {
    let model = Model::start(three_turns()).await;
    let dir = store_dir();
    let server = server(&dir, &model, BUDGET).await;
    let addr = server.addr();
    let b = browser().await;
    b.client.set_window_size(1280, 900).await.unwrap();
    sign_in_as(&b.client, addr, "token", &token("alice")).await;
    until_it_waits(&b.client).await;
    let run = newest_run_id(&b.client).await;
    let words = paused_words(&b.client).await;
    let waiting = json!({"status": "waiting", "text": words, "buttons": ["Cancel"],
        "run": "waiting", "shows": "waiting for your budget", "notices": 1});
    assert_eq!(js(&b.client, WAIT).await, waiting);
    // It shows, below the run's steps, without scrolling.
    let in_view = js(
        &b.client,
        "const w = document.querySelector('#conversation > .run:last-child .budget-wait').getBoundingClientRect(); \
         const s = document.getElementById('scroller').getBoundingClientRect(); \
         return w.top >= s.top && w.bottom <= s.bottom",
    )
    .await;
    assert_eq!(in_view, true, "the notice is in view");
    // Both tool calls ran before it paused, and the third model call was never made.
    let tools = js(
        &b.client,
        "return [...document.querySelectorAll('#conversation > .run:last-child .row .kind')].map(k => k.textContent)",
    )
    .await;
    assert_eq!(tools, json!(["tool", "result", "tool", "result"]));
    assert_eq!(model.requests().len(), 2);
    eventually(addr, &format!("/v1/runs/{run}"), "alice", |body| {
        body["status"] == "waiting_for_budget"
    })
    .await;
    // The usage line is fetched again when the run pauses: near the limit, a warning.
    let resets = js(
        &b.client,
        "return new Date(window.usage.last.resets_at).toLocaleDateString(undefined, { month: 'short', day: 'numeric' })",
    )
    .await;
    wait_value(
        &b.client,
        "the usage line counts what the run used before it paused",
        LINE,
        json!([
            true,
            format!(
                "{} of {} tokens this month · resets {}",
                grouped(&b.client, 2 * PER_CALL).await,
                grouped(&b.client, BUDGET).await,
                resets.as_str().unwrap()
            ),
            "warn"
        ]),
    )
    .await;
    // The composer says the thread's answer waits for the budget.
    let hint = js(
        &b.client,
        "const h = document.getElementById('live-hint'); return [h.offsetParent !== null, h.textContent]",
    )
    .await;
    assert_eq!(
        hint,
        json!([
            true,
            "The answer above waits for your budget: it goes on by itself once the budget allows; Send now stops it."
        ])
    );
    artifact(&b.client, "budget-wait.png").await;
    b.client.set_window_size(420, 900).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(js(&b.client, NO_SIDEWAYS_SCROLL).await, 0);
    artifact(&b.client, "budget-wait-narrow.png").await;

    // A reload shows the same waiting run from the history, with its notice.
    b.client.refresh().await.unwrap();
    wait_value(
        &b.client,
        "the reloaded page shows the run waiting",
        WAIT,
        waiting.clone(),
    )
    .await;
    assert_eq!(newest_run_id(&b.client).await, run);

    // Cancel ends it: the run shows as stopped, and the notice is a quiet line.
    b.client
        .find(Locator::Css(
            "#conversation > .run:last-child .budget-cancel",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_newest_run(&b.client, "cancelled").await;
    assert_eq!(
        js(&b.client, WAIT).await,
        json!({"status": "stopped", "text": "Cancelled while it waited for the budget.",
            "buttons": [], "run": "cancelled", "shows": "stopped", "notices": 1})
    );
    eventually(addr, &format!("/v1/runs/{run}"), "alice", |body| {
        body["status"] == "cancelled"
    })
    .await;
    assert_eq!(model.requests().len(), 2, "no model call after the pause");
    assert_eq!(js(&b.client, NO_SIDEWAYS_SCROLL).await, 0);
    artifact(&b.client, "budget-wait-cancelled-narrow.png").await;

    // A cost budget is said in dollars, and without a known period as "this period".
    let cost = js(
        &b.client,
        "return window.usage.pausedText({ budget: 'cost_usd', used: 0.3, limit: 0.2, resets_at: '2027-01-01T00:00:00.000000Z' }, null)",
    )
    .await;
    let when = js(
        &b.client,
        "return new Date('2027-01-01T00:00:00Z').toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })",
    )
    .await;
    assert_eq!(
        cost,
        format!(
            "Paused: your cost budget for this period is used up ($0.30 of $0.20). This run goes \
             on by itself when the budget resets on {}, or when your limit is raised.",
            when.as_str().unwrap()
        )
    );
    assert_eq!(
        js(&b.client, "return window.chat.stats.cspViolations").await,
        0
    );
    drop(b);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_its_budget_goes_on_by_itself_when_the_plan_is_raised() {
    let model = Model::start(three_turns()).await;
    let dir = store_dir();
    let server = server(&dir, &model, 100_000).await;
    let addr = server.addr();
    // Carol's token carries a plan of her own, with room for two calls.
    let plan = |tokens: u64| {
        token_with(
            json!({"sub": "carol", "exp": now_secs() + 600,
                   "agent_engine_budget": {"tokens": tokens}}),
            SECRET,
        )
    };
    let b = browser().await;
    b.client.set_window_size(1280, 900).await.unwrap();
    sign_in_as(&b.client, addr, "token", &plan(BUDGET)).await;
    until_it_waits(&b.client).await;
    let words = paused_words(&b.client).await;
    assert_eq!(js(&b.client, WAIT).await["text"], words.as_str());
    // The page's own requests carry her plan as it is: let its fetch after the pause end first.
    wait_js(
        &b.client,
        "the usage line is fetched again after the pause",
        "return window.usage.stats.fetches >= 2 && window.usage.last.tokens.used === 4000",
    )
    .await;

    // Her identity provider raises her plan: her next request brings it, and the run goes on.
    let raised = crate::support::http_client()
        .get(format!("http://{addr}/v1/me/usage"))
        .bearer_auth(plan(100_000))
        .send()
        .await
        .unwrap();
    assert_eq!(raised.status().as_u16(), 200);
    wait_newest_run(&b.client, "completed").await;
    let after = js(&b.client, WAIT).await;
    assert_eq!(after["status"], "resumed", "{after}");
    assert_eq!(after["buttons"], json!([]), "{after}");
    assert_eq!(after["run"], "completed", "{after}");
    assert_eq!(after["notices"], 1, "{after}");
    let text = after["text"].as_str().unwrap();
    assert!(
        text.starts_with("Waited for the budget, then went on at ") && text.ends_with('.'),
        "{text}"
    );
    let answer = js(
        &b.client,
        "const runs = document.querySelectorAll('#conversation > .run'); \
         return [runs.length, runs[runs.length - 1].querySelector('.answer').textContent.trim()]",
    )
    .await;
    assert_eq!(
        answer,
        json!([1, "four, twice"]),
        "one run, gone on to its answer"
    );
    let line_first = js(
        &b.client,
        "const r = document.querySelector('#conversation > .run:last-child'); \
         const w = r.querySelector('.budget-wait'), a = r.querySelector('.answer'); \
         return !!(w.compareDocumentPosition(a) & Node.DOCUMENT_POSITION_FOLLOWING)",
    )
    .await;
    assert_eq!(
        line_first, true,
        "the line stays where the run paused, above what it answered after"
    );
    assert_eq!(model.requests().len(), 3);
    artifact(&b.client, "budget-wait-went-on.png").await;
    drop(b);
    server.shutdown().await;
}
