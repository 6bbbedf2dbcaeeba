//! A second message into a busy thread ("double texting") in the chat page, in a real browser
//! (see `browser.rs` for the driver) against a real server: a message sent while the thread's
//! run is live waits below the conversation as queued, with its place in line and a Cancel
//! button, and runs once the first ends; Cancel ends a queued one before it starts; "Send now
//! (interrupt)" stops the live run and runs the new message next; "Add to the running answer"
//! shows only for an agent that takes messages (the `llm` agent), and the added message shows
//! once, as the user's, inside the run where the agent took it; a message the thread refuses
//! (`thread_waiting_for_approval`, `thread_busy`) stays in the composer with a plain notice.
//! Screenshots (1280 and 420 px wide) go to the target directory's `browser-artifacts`.

use std::time::Duration;

use core_context::multitask::Multitask;
use fantoccini::{Client, Locator};
use llm_agent::LlmConfig;
use serde_json::{Value, json};

use crate::approvals::{approving, sqlite, store_dir};
use crate::browser::{
    NO_SIDEWAYS_SCROLL, artifact, browser, js, sign_in, start, wait_js, wait_value,
};
use crate::llm::{DONE, Model, Piece, Reply, content};
use crate::server_support::start_server;

/// The conversation's runs in the order the page shows them: message, state, what it says.
const RUNS: &str = "return [...document.querySelectorAll('#conversation > .run')].map(r => \
    [r.querySelector('.bubble .text').textContent, r.dataset.state, r.querySelector('.run-state').textContent])";

/// The messages waiting their turn: message, place in line, what it says, Cancel shown.
const QUEUE: &str = "return [...document.querySelectorAll('#queue > .run')].map(r => \
    [r.querySelector('.bubble .text').textContent, r.dataset.position || null, \
     r.querySelector('.queue-state').textContent, r.querySelector('.cancel-queued').offsetParent !== null])";

/// Which of the composer's buttons for a busy thread show: [Send now, Add to the running answer].
const LIVE_BUTTONS: &str = "return ['send-interrupt', 'send-steer'].map(id => document.getElementById(id).offsetParent !== null)";

/// Types `text` into the composer without sending it.
async fn type_message(client: &Client, text: &str) {
    let field = client.find(Locator::Id("message")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Replaces the agent options under Advanced.
async fn set_options(client: &Client, options: &str) {
    js(
        client,
        "document.getElementById('advanced').open = true; return true",
    )
    .await;
    let field = client.find(Locator::Id("input")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(options).await.unwrap();
}

async fn composer_text(client: &Client) -> Value {
    js(client, "return document.getElementById('message').value").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_message_waits_its_turn_and_a_queued_one_can_be_cancelled() {
    let dir = store_dir();
    let store = sqlite(&dir);
    let server = start_server(move |c| {
        c.jwt_secret = None;
        c.store = Some(store);
        c.start_rate_per_minute = 1_000;
    })
    .await;
    let b = browser().await;
    b.client.set_window_size(1280, 900).await.unwrap();
    sign_in(&b.client, server.addr(), "alice").await;
    assert_eq!(
        js(&b.client, LIVE_BUTTONS).await,
        json!([false, false]),
        "no busy thread yet"
    );

    // A long run: about 4 s of chunks. While it streams, the composer offers Send now, but not
    // Add (the synthetic agent takes no messages).
    start(
        &b.client,
        "synthetic",
        "first",
        Some(r#"{"chunks":40,"sleep_ms":100}"#),
    )
    .await;
    wait_js(
        &b.client,
        "the first run streams",
        "const a = document.querySelector('#conversation > .run .answer'); return !!a && a.textContent.length > 0",
    )
    .await;
    wait_value(
        &b.client,
        "the composer offers Send now only",
        LIVE_BUTTONS,
        json!([true, false]),
    )
    .await;
    let hint = js(
        &b.client,
        "return document.getElementById('live-hint').textContent",
    )
    .await;
    assert_eq!(
        hint,
        "An answer is running: Send queues your message after it; Send now stops it."
    );

    // Two more messages while it runs: each shows at once, queued with its place in line,
    // below the conversation; the live run's view holds none of them.
    start(
        &b.client,
        "synthetic",
        "second",
        Some(r#"{"chunks":3,"sleep_ms":20}"#),
    )
    .await;
    wait_value(
        &b.client,
        "the second message is queued",
        QUEUE,
        json!([["second", "1", "Queued: next in line", true]]),
    )
    .await;
    start(&b.client, "synthetic", "third", None).await;
    wait_value(
        &b.client,
        "the third message is queued behind it",
        QUEUE,
        json!([
            ["second", "1", "Queued: next in line", true],
            ["third", "2", "Queued: number 2 in line", true]
        ]),
    )
    .await;
    assert_eq!(
        composer_text(&b.client).await,
        "",
        "a queued message leaves the composer"
    );
    let runs = js(&b.client, RUNS).await;
    assert_eq!(runs, json!([["first", "running", ""]]), "{runs}");
    let queued_parts = js(
        &b.client,
        "return [...document.querySelectorAll('#queue .run')].map(r => [r.querySelector('.reply').offsetParent !== null, r.querySelector('.typing').offsetParent !== null])",
    )
    .await;
    assert_eq!(
        queued_parts,
        json!([[false, false], [false, false]]),
        "a queued message shows no answer and no typing indicator"
    );
    let path = artifact(&b.client, "multitask-queued.png").await;
    eprintln!("screenshot of queued messages: {}", path.display());
    b.client.set_window_size(420, 900).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(js(&b.client, NO_SIDEWAYS_SCROLL).await, 0);
    assert_eq!(js(&b.client, LIVE_BUTTONS).await, json!([true, false]));
    artifact(&b.client, "multitask-queued-narrow.png").await;

    // Cancel the third: it ends before it started; the second stays next in line.
    click(&b.client, "#queue .run[data-position=\"2\"] .cancel-queued").await;
    wait_value(
        &b.client,
        "the third is cancelled before it started",
        RUNS,
        json!([
            ["first", "running", ""],
            ["third", "cancelled", "cancelled before it started"]
        ]),
    )
    .await;
    assert_eq!(
        js(&b.client, QUEUE).await,
        json!([["second", "1", "Queued: next in line", true]])
    );

    // The first ends, then the second runs to its end: the conversation in the order the
    // runs started, nothing left waiting, and the composer back to plain Send.
    wait_value(
        &b.client,
        "the second ran after the first",
        "const runs = [...document.querySelectorAll('#conversation > .run')]; \
         return runs.map(r => [r.querySelector('.bubble .text').textContent, r.dataset.state])",
        json!([
            ["first", "completed"],
            ["third", "cancelled"],
            ["second", "completed"]
        ]),
    )
    .await;
    assert_eq!(js(&b.client, QUEUE).await, json!([]));
    let answers = js(
        &b.client,
        "return [...document.querySelectorAll('#conversation > .run .answer')].map(a => a.textContent.trim())",
    )
    .await;
    let first: String = (1..=40).map(|i| format!("chunk {i} ")).collect();
    assert_eq!(
        answers,
        json!([first.trim_end(), "", "chunk 1 chunk 2 chunk 3"]),
        "each answer in its own run"
    );
    wait_value(
        &b.client,
        "the composer is back to Send",
        LIVE_BUTTONS,
        json!([false, false]),
    )
    .await;
    let stats = js(&b.client, "return window.chat.stats").await;
    assert_eq!(
        (stats["duplicates"].as_u64(), stats["gaps"].as_u64()),
        (Some(0), Some(0)),
        "{stats}"
    );
    assert_eq!(js(&b.client, NO_SIDEWAYS_SCROLL).await, 0);
    artifact(&b.client, "multitask-ran-in-turn-narrow.png").await;
    server.shutdown().await;
}

/// The model's first answer streams, pauses long enough for the page to add a message, and
/// ends; its second answers the added message.
fn steered_replies() -> Vec<Reply> {
    vec![
        Reply::Stream(vec![
            content("It is 20 degrees"),
            Piece::Sleep(4_000),
            content(" Celsius."),
            DONE,
        ]),
        Reply::Stream(vec![content("That is 68 degrees Fahrenheit."), DONE]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_now_interrupts_and_add_joins_a_running_answer_of_an_agent_that_takes_messages() {
    let model = Model::start(steered_replies()).await;
    let base = format!("http://{}/v1", model.addr);
    let dir = store_dir();
    let store = sqlite(&dir);
    let server = start_server(move |c| {
        c.jwt_secret = None;
        c.store = Some(store);
        c.start_rate_per_minute = 1_000;
        c.llm = Some(LlmConfig::new(base, "test-model"));
    })
    .await;
    let b = browser().await;
    b.client.set_window_size(1280, 900).await.unwrap();
    sign_in(&b.client, server.addr(), "alice").await;

    // A synthetic run that never ends by itself; the page offers Send now, not Add.
    start(
        &b.client,
        "synthetic",
        "take your time",
        Some(r#"{"thinking":1,"tools":0,"chunks":0,"hang":true}"#),
    )
    .await;
    wait_js(
        &b.client,
        "the run is running",
        "return !!document.querySelector('#conversation > .run .timeline .row')",
    )
    .await;
    wait_value(
        &b.client,
        "Send now shows, Add does not",
        LIVE_BUTTONS,
        json!([true, false]),
    )
    .await;

    // Send now: the running run stops as interrupted, and the new message runs next.
    set_options(&b.client, r#"{"chunks":2,"sleep_ms":10}"#).await;
    type_message(&b.client, "urgent").await;
    click(&b.client, "#send-interrupt").await;
    wait_value(
        &b.client,
        "the interrupted run stopped and the new message ran",
        "return [...document.querySelectorAll('#conversation > .run')].map(r => \
           [r.querySelector('.bubble .text').textContent, r.dataset.state, r.querySelector('.run-state').textContent.split(' in ')[0]])",
        json!([
            ["take your time", "cancelled", "interrupted by your newer message"],
            ["urgent", "completed", "answered"]
        ]),
    )
    .await;
    let last_step = js(
        &b.client,
        "const rows = [...document.querySelector('#conversation > .run').querySelectorAll('.row')]; \
         const r = rows[rows.length - 1]; return [r.querySelector('.kind').textContent, r.querySelector('.what').textContent]",
    )
    .await;
    assert_eq!(last_step, json!(["stopped", "interrupted"]));
    assert_eq!(composer_text(&b.client).await, "");
    assert_eq!(js(&b.client, QUEUE).await, json!([]));

    // An llm run takes messages: while it answers, Add shows; the added message joins it.
    set_options(&b.client, "{}").await;
    start(&b.client, "llm", "How warm is it?", None).await;
    wait_js(
        &b.client,
        "the llm run streams",
        "const runs = document.querySelectorAll('#conversation > .run'); const r = runs[runs.length - 1]; \
         return runs.length === 3 && r.querySelector('.answer').textContent.includes('It is 20 degrees')",
    )
    .await;
    wait_value(
        &b.client,
        "Send now and Add show",
        LIVE_BUTTONS,
        json!([true, true]),
    )
    .await;
    type_message(&b.client, "In Fahrenheit, please").await;
    click(&b.client, "#send-steer").await;
    wait_js(
        &b.client,
        "the added message shows in the running answer",
        "const r = document.querySelector('#conversation > .run:last-child'); \
         return [...r.querySelectorAll('.bubble.added .text')].map(t => t.textContent).join() === 'In Fahrenheit, please'",
    )
    .await;
    assert_eq!(composer_text(&b.client).await, "");
    artifact(&b.client, "multitask-added-while-running.png").await;
    wait_js(
        &b.client,
        "the llm run completed",
        "const r = document.querySelector('#conversation > .run:last-child'); return r.dataset.state === 'completed'",
    )
    .await;
    // Once, as the user's message, between the answer before it and the answer to it; no run
    // of its own, nothing queued, no step repeating it.
    let run = js(
        &b.client,
        "const r = document.querySelector('#conversation > .run:last-child'); \
         const parts = [...r.querySelector('.reply').children].filter(c => c.matches('.answer, .bubble.added')); \
         return {parts: parts.map(p => [p.className, p.textContent.trim()]), \
           added: [...r.querySelectorAll('.bubble.added')].map(b => b.dataset.state), \
           rows: [...r.querySelectorAll('.row .kind')].map(k => k.textContent), \
           runs: document.querySelectorAll('#conversation > .run').length, \
           queued: document.querySelectorAll('#queue .run').length}",
    )
    .await;
    let parts = run["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{run}");
    assert_eq!(
        parts[0],
        json!(["answer", "It is 20 degrees Celsius."]),
        "{run}"
    );
    assert_eq!(parts[1][0], "bubble added", "{run}");
    assert!(
        parts[1][1]
            .as_str()
            .unwrap()
            .starts_with("In Fahrenheit, pleaseYou added this while it answered"),
        "{run}"
    );
    assert_eq!(
        parts[2],
        json!(["answer", "That is 68 degrees Fahrenheit."]),
        "{run}"
    );
    assert_eq!(run["added"], json!(["taken"]), "{run}");
    assert!(
        !run["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "you added"),
        "{run}"
    );
    assert_eq!(
        (run["runs"].as_u64(), run["queued"].as_u64()),
        (Some(3), Some(0)),
        "{run}"
    );
    wait_value(
        &b.client,
        "the composer is back to Send",
        LIVE_BUTTONS,
        json!([false, false]),
    )
    .await;
    artifact(&b.client, "multitask-added.png").await;
    b.client.set_window_size(420, 900).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(js(&b.client, NO_SIDEWAYS_SCROLL).await, 0);
    artifact(&b.client, "multitask-added-narrow.png").await;

    // The stored conversation shows the same: the thread opened again from the history.
    click(&b.client, "#sidebar-toggle").await;
    click(&b.client, "#threads li[aria-current=\"true\"] .open").await;
    wait_js(
        &b.client,
        "the thread is shown from the history",
        "return window.chat.stats.stored === 3",
    )
    .await;
    let stored = js(
        &b.client,
        "const r = document.querySelector('#conversation > .run:last-child'); \
         return [[...r.querySelectorAll('.bubble.added .text')].map(t => t.textContent), \
           [...r.querySelectorAll('.answer')].map(a => a.textContent.trim())]",
    )
    .await;
    assert_eq!(
        stored,
        json!([
            ["In Fahrenheit, please"],
            [
                "It is 20 degrees Celsius.",
                "That is 68 degrees Fahrenheit."
            ]
        ])
    );
    let states = js(&b.client, RUNS).await;
    assert_eq!(
        states[0],
        json!([
            "take your time",
            "cancelled",
            "interrupted by your newer message"
        ]),
        "an interrupted run reads as interrupted from the history too: {states}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_busy_thread_refuses_stays_in_the_composer_with_a_plain_notice() {
    let dir = store_dir();
    let approve = approving(&sqlite(&dir), &["calculator"]);
    let server = start_server(move |c| {
        approve(c);
        c.jwt_secret = None;
        c.multitask_default = Multitask::Reject;
    })
    .await;
    let b = browser().await;
    b.client.set_window_size(420, 900).await.unwrap();
    sign_in(&b.client, server.addr(), "alice").await;

    // A run waiting for an approval: Send is refused with a notice that says what to do, and
    // the message stays typed.
    start(&b.client, "assistant", "What is 12*7?", None).await;
    wait_js(
        &b.client,
        "the run waits for its approval",
        "const r = document.querySelector('#conversation > .run'); return !!r && r.dataset.state === 'waiting'",
    )
    .await;
    wait_value(
        &b.client,
        "Send now shows",
        LIVE_BUTTONS,
        json!([true, false]),
    )
    .await;
    type_message(&b.client, "never mind").await;
    b.client
        .find(Locator::Id("message"))
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    wait_js(
        &b.client,
        "the refusal shows by the composer",
        "return !document.getElementById('composer-notice').hidden",
    )
    .await;
    let notice = js(&b.client, "const n = document.getElementById('composer-notice'); return [n.textContent, n.dataset.kind]").await;
    assert!(
        notice[0].as_str().unwrap()
            == "This conversation waits for your decision on a tool call. Decide it above, or press \u{201c}Send now (interrupt)\u{201d} to stop that answer and send this message.",
        "{notice}"
    );
    assert_eq!(notice[1], "busy");
    assert_eq!(composer_text(&b.client).await, "never mind");
    assert_eq!(js(&b.client, QUEUE).await, json!([]));
    assert_eq!(js(&b.client, NO_SIDEWAYS_SCROLL).await, 0);
    artifact(&b.client, "multitask-refused-narrow.png").await;

    // Send now ends the waiting run (its card can no longer be decided) and answers this.
    click(&b.client, "#send-interrupt").await;
    wait_value(
        &b.client,
        "the waiting run was interrupted and the new message answered",
        "return [...document.querySelectorAll('#conversation > .run')].map(r => [r.querySelector('.bubble .text').textContent, r.dataset.state])",
        json!([["What is 12*7?", "cancelled"], ["never mind", "completed"]]),
    )
    .await;
    assert_eq!(
        js(
            &b.client,
            "return document.querySelector('.approval').dataset.status"
        )
        .await,
        "stopped"
    );
    assert_eq!(
        js(
            &b.client,
            "return document.getElementById('composer-notice').hidden"
        )
        .await,
        true,
        "the notice goes once the message is taken"
    );

    // A server that refuses by default: a message into a running thread is refused
    // (thread_busy), kept, and the hint no longer says Send waits.
    start(
        &b.client,
        "synthetic",
        "keep going",
        Some(r#"{"thinking":1,"tools":0,"chunks":0,"hang":true}"#),
    )
    .await;
    wait_js(
        &b.client,
        "the run is running",
        "const r = document.querySelector('#conversation > .run:last-child'); return r.querySelector('.bubble .text').textContent === 'keep going' && r.dataset.state === 'running'",
    )
    .await;
    type_message(&b.client, "and another thing").await;
    b.client
        .find(Locator::Id("message"))
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    wait_js(
        &b.client,
        "the thread_busy refusal shows",
        "return document.getElementById('composer-notice').textContent.startsWith('This conversation is still answering')",
    )
    .await;
    assert_eq!(composer_text(&b.client).await, "and another thing");
    assert_eq!(
        js(
            &b.client,
            "return document.getElementById('live-hint').textContent"
        )
        .await,
        "An answer is running: Send works again once it ends; Send now stops it."
    );
    click(&b.client, "#conversation > .run:last-child .stop").await;
    wait_value(
        &b.client,
        "the run stopped",
        "return document.querySelector('#conversation > .run:last-child .run-state').textContent",
        json!("stopped"),
    )
    .await;
    server.shutdown().await;
}
