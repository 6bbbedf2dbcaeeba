//! Tool-call approvals in the chat page, in a real browser (see `browser.rs` for the driver),
//! on a server that holds every `calculator` call for a person's decision: the card shows
//! where the run paused, with the tool and its arguments; Approve, Edit (a JSON editor with
//! the schema's fields, whose refusals show on the card) and Reject (with a reason) each
//! resume the run to the answer they imply; the sidebar marks a thread while a call in it
//! waits; a decision taken in one window shows in the other; a thread opened from the
//! history shows its waiting card, and its decided ones decided; a stopped run's card can
//! no longer be decided; a call nobody decides shows as expired. Screenshots (1280 and
//! 420 px wide) go to the target directory's `browser-artifacts`.

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use crate::approvals::{approving, sqlite, store_dir};
use crate::browser::{
    NO_SIDEWAYS_SCROLL, artifact, browser, js, sign_in_as, start, wait_js, wait_newest_run,
};
use crate::server_support::{start_server, token};

/// What the newest run's (last) approval card shows: its status, its badge, what it says the
/// tool wants, the arguments shown (parsed), the buttons a person can press, its error, the
/// outcome line, and the run's state.
const CARD: &str = "const runs = document.querySelectorAll('#conversation > .run'); \
    const run = runs[runs.length - 1]; const cards = run ? run.querySelectorAll('.approval') : []; \
    const c = cards[cards.length - 1]; if (!c) return null; \
    const visible = (e) => !!e && e.offsetParent !== null; \
    return {status: c.dataset.status, badge: c.querySelector('.approval-badge').textContent, \
      what: c.querySelector('.approval-what').textContent, \
      args: JSON.parse(c.querySelector('pre.json').textContent), \
      buttons: [...c.querySelectorAll('.approval-actions button')].filter(visible).map(b => b.textContent), \
      error: c.querySelector('.approval-error').textContent, \
      outcome: c.querySelector('.approval-outcome').textContent, run: run.dataset.state}";

async fn card(client: &Client) -> Value {
    js(client, CARD).await
}

/// Waits until the newest run's card has `status`, and returns it.
async fn wait_card(client: &Client, status: &str) -> Value {
    let script = format!(
        "const runs = document.querySelectorAll('#conversation > .run'); const r = runs[runs.length - 1]; \
         const cs = r ? r.querySelectorAll('.approval') : []; \
         return cs.length > 0 && cs[cs.length - 1].dataset.status === '{status}'"
    );
    wait_js(client, &format!("the newest card is {status}"), &script).await;
    card(client).await
}

/// Clicks the element `css` in the newest run's card.
async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(&format!(
            "#conversation > .run:last-child .approval:last-child {css}"
        )))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Replaces the text of the field `css` in the newest card by typing `text`.
async fn type_into(client: &Client, css: &str, text: &str) {
    let field = client
        .find(Locator::Css(&format!(
            "#conversation > .run:last-child .approval:last-child {css}"
        )))
        .await
        .unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// The newest run's answer, as text.
async fn answer(client: &Client) -> String {
    let a = js(
        client,
        "return [...document.querySelectorAll('#conversation > .run .answer')].pop().textContent",
    )
    .await;
    a.as_str().unwrap().trim().to_owned()
}

/// The sidebar's marks: for each listed thread, its "needs approval" mark (or null).
const MARKS: &str = "return [...document.querySelectorAll('#threads li')].map(li => { \
    const m = li.querySelector('.approval-mark'); return m && m.offsetParent !== null ? m.textContent : null })";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_edit_and_reject_from_the_card() {
    let dir = store_dir();
    let server = start_server(approving(&sqlite(&dir), &["calculator"])).await;
    let b = browser().await;
    b.client.set_window_size(1280, 900).await.unwrap();
    sign_in_as(&b.client, server.addr(), "token", &token("alice")).await;

    // The run pauses at its calculator call: a card with the tool, its arguments and the
    // three buttons; the run says it waits; the sidebar marks its thread.
    start(&b.client, "assistant", "What is 12*7?", None).await;
    let waiting = wait_card(&b.client, "pending").await;
    assert_eq!(
        waiting,
        json!({"status": "pending", "badge": "Needs your approval",
            "what": "calculator wants to run with:", "args": {"expression": "12*7"},
            "buttons": ["Approve", "Edit", "Reject"], "error": "", "outcome": "", "run": "waiting"})
    );
    let when = js(
        &b.client,
        "return document.querySelector('.approval .approval-when').textContent",
    )
    .await;
    assert!(when.as_str().unwrap().starts_with("expires "), "{when}");
    wait_js(
        &b.client,
        "the sidebar marks the waiting thread",
        "const m = document.querySelector('#threads li[aria-current=\"true\"] .approval-mark'); \
         return !!m && m.textContent === 'needs approval'",
    )
    .await;
    assert_eq!(
        js(
            &b.client,
            "return document.querySelector('.run .run-state').textContent"
        )
        .await,
        "waiting for your approval"
    );
    artifact(&b.client, "approvals-card-waiting.png").await;

    // Approve: the card says so and loses its buttons; the answer follows; the mark goes.
    click(&b.client, "button.approve").await;
    wait_newest_run(&b.client, "completed").await;
    let approved = card(&b.client).await;
    assert_eq!(approved["status"], "approve", "{approved}");
    assert_eq!(approved["badge"], "Approved");
    assert_eq!(approved["buttons"], json!([]));
    assert_eq!(approved["outcome"], "calculator ran with these arguments.");
    assert!(answer(&b.client).await.contains("12*7 = 84"));
    wait_js(
        &b.client,
        "the mark goes once decided",
        "return document.querySelectorAll('#threads li').length === 1 \
         && !document.querySelector('#threads .approval-mark')",
    )
    .await;
    artifact(&b.client, "approvals-card-approved.png").await;

    // Edit: a JSON editor prefilled with the arguments, with the schema's fields as a hint.
    start(&b.client, "assistant", "What is 12*7?", None).await;
    wait_card(&b.client, "pending").await;
    click(&b.client, "button.edit").await;
    let editor = js(
        &b.client,
        "const c = [...document.querySelectorAll('.approval')].pop(); \
         return [JSON.parse(c.querySelector('textarea').value), \
           [...c.querySelectorAll('.approval-actions button')].filter(b => b.offsetParent !== null).map(b => b.textContent)]",
    )
    .await;
    assert_eq!(editor[0], json!({"expression": "12*7"}), "{editor}");
    wait_js(
        &b.client,
        "the schema's fields show",
        "const f = [...document.querySelectorAll('.approval')].pop().querySelector('.approval-fields'); \
         return !!f && f.textContent.includes('expression string, required')",
    )
    .await;
    assert_eq!(
        editor[1],
        json!(["Run with these arguments", "Cancel"]),
        "the editor's buttons replace the card's"
    );
    // Not JSON: said on the card, nothing sent.
    type_into(&b.client, "textarea", "{expression: 12*8").await;
    click(&b.client, "button.run-edited").await;
    let bad = card(&b.client).await;
    assert_eq!(bad["status"], "pending");
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .starts_with("That is not valid JSON"),
        "{bad}"
    );
    // JSON the tool's schema refuses: the server's invalid_field, plainly, on the card.
    type_into(&b.client, "textarea", r#"{"expression": 5}"#).await;
    click(&b.client, "button.run-edited").await;
    wait_js(
        &b.client,
        "the server's refusal shows on the card",
        "const c = [...document.querySelectorAll('.approval')].pop(); \
         return c.dataset.status === 'pending' && c.querySelector('.approval-error').textContent.includes('schema')",
    )
    .await;
    let refused = card(&b.client).await;
    assert_eq!(
        refused["error"],
        "The server did not accept this decision: arguments do not fit calculator's schema: \
         invalid arguments: /expression: want string, but got number",
        "{refused}"
    );
    artifact(&b.client, "approvals-card-refused-edit.png").await;
    type_into(&b.client, "textarea", r#"{"expression": "12*8"}"#).await;
    click(&b.client, "button.run-edited").await;
    wait_newest_run(&b.client, "completed").await;
    let edited = card(&b.client).await;
    assert_eq!(
        [&edited["status"], &edited["badge"], &edited["error"]],
        [&json!("edit"), &json!("Approved with changes"), &json!("")],
        "{edited}"
    );
    let ran = js(&b.client, "const c = [...document.querySelectorAll('.approval')].pop(); return JSON.parse(c.querySelector('.approval-outcome pre').textContent)").await;
    assert_eq!(ran, json!({"expression": "12*8"}));
    assert!(answer(&b.client).await.contains("12*8 = 96"));

    // Reject, with a reason: the agent says it was rejected, and why.
    start(&b.client, "assistant", "What is 12*7?", None).await;
    wait_card(&b.client, "pending").await;
    // (Cancel closes the form and brings the buttons back.)
    click(&b.client, "button.reject").await;
    click(&b.client, ".approval-form button.secondary").await;
    let back = card(&b.client).await;
    assert_eq!(back["buttons"], json!(["Approve", "Edit", "Reject"]));
    click(&b.client, "button.reject").await;
    type_into(&b.client, "input.approval-reason", "not now").await;
    click(&b.client, "button.reject-confirm").await;
    wait_newest_run(&b.client, "completed").await;
    let rejected = card(&b.client).await;
    assert_eq!(
        [
            &rejected["status"],
            &rejected["badge"],
            &rejected["buttons"]
        ],
        [&json!("reject"), &json!("Rejected: not now"), &json!([])],
        "{rejected}"
    );
    assert_eq!(
        answer(&b.client).await,
        "I could not use calculator: a person rejected this call: not now."
    );
    artifact(&b.client, "approvals-card-rejected.png").await;

    // A waiting run stopped: its card can no longer be decided.
    start(&b.client, "assistant", "What is 12*7?", None).await;
    wait_card(&b.client, "pending").await;
    b.client
        .find(Locator::Css(
            "#conversation > .run:last-child .reply-head .stop",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_newest_run(&b.client, "cancelled").await;
    let stopped = card(&b.client).await;
    assert_eq!(
        [&stopped["status"], &stopped["badge"], &stopped["buttons"]],
        [&json!("stopped"), &json!("No longer waiting"), &json!([])],
        "{stopped}"
    );
    wait_js(
        &b.client,
        "the mark goes with the stopped run",
        "return !document.querySelector('#threads .approval-mark')",
    )
    .await;

    // The thread again, from the history: each card shown as it ended.
    b.client.refresh().await.unwrap();
    wait_js(
        &b.client,
        "the reloaded page shows the three runs",
        "return document.getElementById('status').dataset.state === 'connected' \
         && document.querySelectorAll('#conversation > .run[data-state=\"completed\"]').length === 3",
    )
    .await;
    // The stopped run's events come in a request of their own: wait for its card too.
    wait_js(
        &b.client,
        "the reloaded page shows the four cards",
        "return document.querySelectorAll('.approval').length === 4",
    )
    .await;
    let stored = js(&b.client, "return [...document.querySelectorAll('.approval')].map(c => [c.dataset.status, c.querySelector('.approval-badge').textContent, c.querySelectorAll('.approval-actions button').length && c.querySelector('.approval-actions').offsetParent !== null])").await;
    assert_eq!(
        stored,
        json!([
            ["approve", "Approved", false],
            ["edit", "Approved with changes", false],
            ["reject", "Rejected: not now", false],
            ["stopped", "No longer waiting", false]
        ])
    );
    assert_eq!(js(&b.client, MARKS).await, json!([null]));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_in_one_window_shows_in_the_other() {
    let dir = store_dir();
    let server = start_server(approving(&sqlite(&dir), &["calculator"])).await;
    let addr = server.addr();
    let one = browser().await;
    let two = browser().await;
    one.client.set_window_size(1280, 900).await.unwrap();
    two.client.set_window_size(420, 900).await.unwrap();
    sign_in_as(&one.client, addr, "token", &token("alice")).await;
    sign_in_as(&two.client, addr, "token", &token("alice")).await;

    // A call waits in a thread the second window does not show: its list marks the thread
    // (and the narrow screen's list button); opening it shows the waiting card from the
    // history, with buttons.
    start(&one.client, "assistant", "What is 12*7?", None).await;
    wait_card(&one.client, "pending").await;
    wait_js(
        &two.client,
        "the other window marks the waiting thread",
        "const m = document.querySelector('#threads li .approval-mark'); return !!m && m.textContent === 'needs approval' \
         && document.getElementById('sidebar-toggle').dataset.waiting === '1'",
    )
    .await;
    assert_eq!(
        js(
            &two.client,
            "return document.querySelectorAll('#conversation > .run').length"
        )
        .await,
        0,
        "a run of another thread is not shown"
    );
    two.client
        .find(Locator::Id("sidebar-toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    artifact(&two.client, "approvals-narrow-sidebar-mark.png").await;
    two.client
        .find(Locator::Css("#threads li .open"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let shown = wait_card(&two.client, "pending").await;
    assert_eq!(shown["buttons"], json!(["Approve", "Edit", "Reject"]));
    assert_eq!(shown["args"], json!({"expression": "12*7"}));
    assert_eq!(
        js(&two.client, NO_SIDEWAYS_SCROLL).await,
        0,
        "sideways scroll at 420 px"
    );
    artifact(&two.client, "approvals-narrow-card-waiting.png").await;

    // Approved in the first window: the second shows it approved, then the answer.
    click(&one.client, "button.approve").await;
    let seen = wait_card(&two.client, "approve").await;
    assert_eq!(seen["buttons"], json!([]));
    wait_newest_run(&two.client, "completed").await;
    assert!(answer(&two.client).await.contains("12*7 = 84"));
    for client in [&one.client, &two.client] {
        wait_js(
            client,
            "no mark is left",
            "return !document.querySelector('#threads .approval-mark') \
             && !document.getElementById('sidebar-toggle').dataset.waiting",
        )
        .await;
    }

    // Rejected in the second (narrow) window, with a reason the first learns from the run.
    start(&two.client, "assistant", "What is 12*7?", None).await;
    wait_card(&two.client, "pending").await;
    wait_card(&one.client, "pending").await;
    click(&two.client, "button.reject").await;
    type_into(&two.client, "input.approval-reason", "not now").await;
    assert_eq!(
        js(&two.client, NO_SIDEWAYS_SCROLL).await,
        0,
        "sideways scroll with the form open"
    );
    artifact(&two.client, "approvals-narrow-reject-form.png").await;
    click(&two.client, "button.reject-confirm").await;
    wait_newest_run(&one.client, "completed").await;
    let other = card(&one.client).await;
    assert_eq!(
        [&other["status"], &other["badge"], &other["buttons"]],
        [&json!("reject"), &json!("Rejected: not now"), &json!([])],
        "{other}"
    );
    wait_newest_run(&two.client, "completed").await;
    assert_eq!(js(&two.client, NO_SIDEWAYS_SCROLL).await, 0);
    artifact(&two.client, "approvals-narrow-card-rejected.png").await;
    artifact(&one.client, "approvals-other-window-rejected.png").await;

    // Both windows decide at once: one wins; the other, whose stream is held back here so
    // that its card still shows the buttons, is told on its card.
    start(&one.client, "assistant", "What is 12*7?", None).await;
    wait_card(&one.client, "pending").await;
    wait_card(&two.client, "pending").await;
    js(
        &two.client,
        "window.held = null; \
         window.release = () => { const h = window.held; window.held = null; h.forEach((e) => window.chat.deliver(e)); }; \
         window.chat.tap = (e) => { \
           if (e.type === 'approval_resolved') window.held = []; \
           if (window.held) { window.held.push(e); return true; } return false; }; \
         return true",
    )
    .await;
    click(&one.client, "button.approve").await;
    wait_js(
        &two.client,
        "the decision is held back",
        "return !!window.held",
    )
    .await;
    click(&two.client, "button.approve").await;
    wait_js(
        &two.client,
        "the late decision is refused on the card",
        "const c = [...document.querySelectorAll('.approval')].pop(); \
         return c.querySelector('.approval-error').textContent.startsWith('This call was already decided')",
    )
    .await;
    assert_eq!(card(&two.client).await["buttons"], json!([]));
    // The held decision arrives: the card shows it, and the run's answer follows.
    js(&two.client, "window.release(); return true").await;
    let late = wait_card(&two.client, "approve").await;
    assert_eq!(
        [&late["badge"], &late["error"]],
        [&json!("Approved"), &json!("")]
    );
    wait_newest_run(&two.client, "completed").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_nobody_decides_shows_as_expired() {
    let dir = store_dir();
    let tune = approving(&sqlite(&dir), &["calculator"]);
    let server = start_server(move |config| {
        tune(config);
        config.engine.approval_timeout = Duration::from_secs(1);
    })
    .await;
    let b = browser().await;
    sign_in_as(&b.client, server.addr(), "token", &token("alice")).await;
    start(&b.client, "assistant", "What is 12*7?", None).await;
    wait_card(&b.client, "pending").await;
    // The sweep runs every 5 s.
    let expired = wait_card(&b.client, "expired").await;
    assert_eq!(
        [&expired["badge"], &expired["outcome"], &expired["buttons"]],
        [
            &json!("Expired"),
            &json!("Nobody decided in time; calculator did not run."),
            &json!([])
        ],
        "{expired}"
    );
    wait_newest_run(&b.client, "completed").await;
    assert!(
        answer(&b.client)
            .await
            .contains("nobody approved this call in time")
    );
    server.shutdown().await;
}
