//! The chat page as a conversation, in a real browser (see `browser.rs` for the driver): the
//! answer rendered as markdown with any HTML in it shown as text, the steps folded under it;
//! sign-in that recovers from a bad token and from a restarted server; nothing typed lost to
//! a refusal; a session that survives a reload and ends with sign-out; the threads sidebar,
//! which opens an old conversation after a restart and continues it; a conversation that
//! survives a server restart in the page; and a narrow screen.
//! Each state is saved as a screenshot under the target directory's `browser-artifacts`.

use std::time::Duration;

use fantoccini::Locator;
use llm_agent::LlmConfig;
use serde_json::json;

use crate::browser::{
    artifact, browser, js, restart_keeping_history, sign_in, sign_in_as, start, wait_js,
    wait_newest_run,
};
use crate::llm::{Model, Piece, Reply, content};
use crate::server_support::{start_server, token};

/// A model's answer with markdown, raw HTML and an image that would run a script.
const MARKDOWN: &str = "**Bold** claim:\n\n1. first\n2. second\n\n`x = 1` and \
    <script>window.pwned = 1</script> <img src=x onerror=\"window.pwned = 2\">";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_render_markdown_show_html_as_text_and_fold_their_steps() {
    let model = Model::start(vec![Reply::Stream(vec![
        content(MARKDOWN),
        Piece::Raw("data: [DONE]\n\n"),
    ])])
    .await;
    let base = format!("http://{}/v1", model.addr);
    let server = start_server(move |c| {
        c.jwt_secret = None;
        c.llm = Some(LlmConfig::new(base, "test-model"));
    })
    .await;
    let b = browser().await;
    sign_in(&b.client, server.addr(), "alice").await;
    start(&b.client, "llm", "Show me markdown", None).await;
    wait_newest_run(&b.client, "completed").await;
    let answer = "const a = document.querySelector('#conversation > .run .answer'); return [\
        a.querySelector('strong') && a.querySelector('strong').textContent, \
        a.querySelectorAll('ol > li').length, a.querySelector('code') && a.querySelector('code').textContent, \
        a.querySelectorAll('script, img').length, a.textContent.includes('<script>window.pwned = 1</script>'), \
        typeof window.pwned]";
    assert_eq!(
        js(&b.client, answer).await,
        json!(["Bold", 2, "x = 1", 0, true, "undefined"]),
        "markdown rendered, HTML shown as text and never run"
    );
    // The user's message is a bubble with a time in the user's locale.
    let bubble = js(&b.client, "const b = document.querySelector('#conversation > .run .bubble'); return [b.querySelector('.text').textContent, !!b.querySelector('time').dateTime]").await;
    assert_eq!(bubble, json!(["Show me markdown", true]));
    // A run without steps shows no fold; a finished run's steps fold, and a click unfolds them.
    let no_steps = "return document.querySelector('#conversation > .run .steps').hidden";
    assert_eq!(
        js(&b.client, no_steps).await,
        true,
        "an answer without steps"
    );
    artifact(&b.client, "chat-markdown-answer.png").await;
    start(&b.client, "assistant", "What is 2+2?", None).await;
    wait_newest_run(&b.client, "completed").await;
    let steps = "return [...document.querySelectorAll('#conversation > .run .steps')].pop().open";
    assert_eq!(
        js(&b.client, steps).await,
        false,
        "steps fold once answered"
    );
    b.client
        .find(Locator::Css(
            "#conversation > .run:last-child .steps > summary",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        js(&b.client, steps).await,
        true,
        "a click unfolds the steps"
    );
    artifact(&b.client, "chat-steps-unfolded.png").await;
    server.shutdown().await;
}

/// The sign-in form's message, once it shows again.
pub(crate) async fn sign_in_reason(client: &fantoccini::Client, what: &str) -> String {
    wait_js(
        client,
        what,
        "return document.getElementById('signin').offsetParent !== null \
         && !document.getElementById('signin-reason').hidden",
    )
    .await;
    let hidden = js(
        client,
        "return document.getElementById('composer').offsetParent === null",
    )
    .await;
    assert_eq!(hidden, true, "{what}: the composer hides");
    js(
        client,
        "return document.getElementById('signin-reason').textContent",
    )
    .await
    .as_str()
    .unwrap()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_recovers_from_a_bad_token_and_from_restarts() {
    // A pasted token the server refuses: said at the sign-in form, never "signed in as ?".
    let server = start_server(|_| {}).await;
    let addr = server.addr();
    let b = browser().await;
    b.client.goto(&format!("http://{addr}/")).await.unwrap();
    let field = b.client.find(Locator::Id("token")).await.unwrap();
    field.send_keys("not-a-token").await.unwrap();
    field.send_keys("\u{E007}").await.unwrap();
    let reason = sign_in_reason(&b.client, "a bad token is refused").await;
    assert!(
        reason.starts_with("That token was not accepted"),
        "{reason}"
    );
    artifact(&b.client, "chat-bad-token.png").await;

    // Signed in with a token; the server comes back with another secret: the session is over.
    sign_in_as(&b.client, addr, "token", &token("alice")).await;
    server.shutdown().await;
    let other = b"another-secret-of-32-bytes-or-more!".to_vec();
    let again = start_server(move |c| {
        c.addr = addr;
        c.jwt_secret = Some(other);
    })
    .await;
    let reason = sign_in_reason(&b.client, "the old token is refused after the restart").await;
    assert!(
        reason.starts_with("Your session is no longer valid"),
        "{reason}"
    );
    artifact(&b.client, "chat-session-ended.png").await;
    again.shutdown().await;

    // Signed in by name on a dev server that restarts with a new random secret: the page gets
    // a fresh dev token by itself and goes on.
    let dev = start_server(|c| c.jwt_secret = None).await;
    let addr = dev.addr();
    sign_in(&b.client, addr, "alice").await;
    dev.shutdown().await;
    let dev = start_server(move |c| {
        c.addr = addr;
        c.jwt_secret = None;
    })
    .await;
    wait_js(
        &b.client,
        "the page signed in again by itself",
        "return window.chat.stats.authFailures >= 1 \
         && document.getElementById('status').dataset.state === 'connected'",
    )
    .await;
    assert_eq!(
        js(
            &b.client,
            "return document.getElementById('who').textContent"
        )
        .await,
        "alice"
    );
    start(&b.client, "assistant", "What is 2+2?", None).await;
    wait_newest_run(&b.client, "completed").await;
    dev.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_typed_is_lost_and_the_session_survives_a_reload() {
    let server = start_server(|c| {
        c.jwt_secret = None;
        c.max_frame_bytes = 4_096;
    })
    .await;
    let b = browser().await;
    sign_in(&b.client, server.addr(), "alice").await;
    let described = js(&b.client, "return [document.getElementById('agent-description').textContent.length > 10, document.getElementById('advanced').open]").await;
    assert_eq!(
        described,
        json!([true, false]),
        "the agent is described; options are folded away"
    );
    // Too long for the server: refused next to the composer, and the text stays.
    js(
        &b.client,
        "document.getElementById('message').value = 'x'.repeat(5000); return true",
    )
    .await;
    let message = b.client.find(Locator::Id("message")).await.unwrap();
    message.send_keys("\u{E007}").await.unwrap();
    wait_js(
        &b.client,
        "the refusal shows",
        "return !document.getElementById('composer-notice').hidden",
    )
    .await;
    let refused = js(&b.client, "return [document.getElementById('composer-notice').textContent, document.getElementById('message').value.length]").await;
    assert!(
        refused[0]
            .as_str()
            .unwrap()
            .starts_with("Your message is too long"),
        "{refused}"
    );
    assert_eq!(refused[1], 5000, "the text stays in the composer");
    artifact(&b.client, "chat-refused-message.png").await;
    // Shortened, it goes: the notice clears and the composer empties once accepted.
    js(
        &b.client,
        "document.getElementById('message').value = ''; return true",
    )
    .await;
    start(&b.client, "assistant", "What is 6*7?", None).await;
    wait_newest_run(&b.client, "completed").await;
    let composer = js(&b.client, "return [document.getElementById('composer-notice').hidden, document.getElementById('message').value]").await;
    assert_eq!(composer, json!([true, ""]));

    // A reload keeps the session and shows the run again; sign-out ends it for good.
    b.client.refresh().await.unwrap();
    wait_js(
        &b.client,
        "the reloaded page signed in by itself",
        "return document.getElementById('status').dataset.state === 'connected' \
         && document.querySelectorAll('#conversation > .run').length === 1",
    )
    .await;
    let url = b.client.current_url().await.unwrap();
    assert!(url.query().is_none(), "no token in the URL bar: {url}");
    b.client
        .find(Locator::Id("signout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let after = js(&b.client, "return [document.getElementById('signin').offsetParent !== null, sessionStorage.length, document.querySelectorAll('#conversation .run').length]").await;
    assert_eq!(after, json!([true, 0, 0]));
    b.client.refresh().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state = js(
        &b.client,
        "return document.getElementById('status').dataset.state",
    )
    .await;
    assert_eq!(state, "signed-out", "signed out stays signed out");
    server.shutdown().await;
}

/// The sidebar's threads: (title, whether it is the open one).
async fn threads(client: &fantoccini::Client) -> serde_json::Value {
    js(client, "return [...document.querySelectorAll('#threads li')].map(li => [li.querySelector('.title').textContent, li.getAttribute('aria-current') === 'true'])").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidebar_opens_an_old_conversation_after_a_restart_and_continues_it() {
    let dir = std::env::temp_dir().join(format!(
        "agent-it-sidebar-{}",
        core_context::RunId::generate()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite://{}", dir.join("history.db").display());
    let kept = store.clone();
    let server = start_server(move |c| c.store = Some(kept)).await;
    let addr = server.addr();
    let b = browser().await;
    sign_in_as(&b.client, addr, "token", &token("alice")).await;
    start(&b.client, "assistant", "What is 2+3?", None).await;
    wait_newest_run(&b.client, "completed").await;
    let first = js(&b.client, "return window.chat.state.thread").await;
    b.client
        .find(Locator::Id("new-thread"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    start(&b.client, "assistant", "What is 5*5?", None).await;
    wait_newest_run(&b.client, "completed").await;
    wait_js(
        &b.client,
        "the sidebar lists both threads",
        "return document.querySelectorAll('#threads li').length === 2",
    )
    .await;
    assert_eq!(
        threads(&b.client).await,
        json!([["What is 5*5?", true], ["What is 2+3?", false]])
    );

    let again = restart_keeping_history(server, store, &b.client).await;
    js(&b.client, "performance.clearResourceTimings(); return true").await;
    b.client
        .find(Locator::Css("#threads li:nth-child(2) .open"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &b.client,
        "the old conversation opens",
        "return document.querySelectorAll('#conversation > .run').length === 1 \
         && document.querySelector('#conversation .bubble .text').textContent === 'What is 2+3?'",
    )
    .await;
    assert_eq!(
        js(&b.client, "return window.chat.state.thread").await,
        first
    );
    // Opening it took one request for the thread with its runs' events, none per run.
    let requests = js(
        &b.client,
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname + new URL(e.name).search)         .filter(p => p.startsWith('/v1/threads/') || p.startsWith('/v1/runs/'))",
    )
    .await;
    assert_eq!(
        requests,
        json!([format!(
            "/v1/threads/{}?events=true&limit=30",
            first.as_str().unwrap()
        )]),
        "{requests}"
    );
    artifact(&b.client, "chat-old-conversation.png").await;
    start(&b.client, "assistant", "What is 1+1?", None).await;
    wait_js(
        &b.client,
        "the follow-up continues the old conversation",
        "const runs = document.querySelectorAll('#conversation > .run'); \
         return runs.length === 2 && runs[1].dataset.state === 'completed'",
    )
    .await;
    assert_eq!(
        js(&b.client, "return window.chat.state.thread").await,
        first
    );

    // Deleting the other conversation takes two clicks in its row's menu.
    js(
        &b.client,
        "document.querySelector('#threads li:first-child .actions').click(); return true",
    )
    .await;
    let delete = "document.querySelector('#threads li:first-child [role=menu] .delete').click(); return true";
    js(&b.client, delete).await;
    wait_js(
        &b.client,
        "the delete button asks again",
        "return document.querySelector('#threads li:first-child .delete').textContent === 'Delete?'",
    )
    .await;
    js(&b.client, delete).await;
    wait_js(
        &b.client,
        "one thread is left",
        "return document.querySelectorAll('#threads li').length === 1",
    )
    .await;
    assert_eq!(threads(&b.client).await, json!([["What is 2+3?", true]]));
    // Renaming, from the row's menu: the item becomes a field; Enter saves the new title.
    js(
        &b.client,
        "document.querySelector('#threads li .actions').click(); \
         document.querySelector('#threads li [role=menu] .rename').click(); return true",
    )
    .await;
    // (WebDriver's clear() would leave the field, which saves it: the value is set instead.)
    js(
        &b.client,
        "document.querySelector('#threads .rename-input').value = 'Sums'; return true",
    )
    .await;
    let field = b
        .client
        .find(Locator::Css("#threads .rename-input"))
        .await
        .unwrap();
    field.send_keys("\u{E007}").await.unwrap();
    wait_js(
        &b.client,
        "the new title shows",
        "const t = document.querySelector('#threads li .title'); return !!t && t.textContent === 'Sums'",
    )
    .await;
    assert_eq!(threads(&b.client).await, json!([["Sums", true]]));

    // A narrow screen: no sideways scroll; the sidebar opens from the header.
    b.client.set_window_size(420, 900).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let overflow =
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth";
    assert_eq!(
        js(&b.client, overflow).await,
        0,
        "sideways scroll at 420 px"
    );
    artifact(&b.client, "chat-narrow-conversation.png").await;
    b.client
        .find(Locator::Id("sidebar-toggle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let open = "return getComputedStyle(document.getElementById('sidebar')).display !== 'none'";
    assert_eq!(js(&b.client, open).await, true);
    assert_eq!(
        js(&b.client, overflow).await,
        0,
        "sideways scroll with the sidebar open"
    );
    artifact(&b.client, "chat-narrow-sidebar.png").await;
    again.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// With a history store, a conversation survives a real server restart in the page: the
/// page shows the stored run with its answer, and a follow-up continues the same thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_survives_a_server_restart_in_the_page() {
    let dir =
        std::env::temp_dir().join(format!("agent-it-page-{}", core_context::RunId::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite://{}", dir.join("history.db").display());
    let kept = store.clone();
    let server = start_server(move |c| c.store = Some(kept)).await;
    let addr = server.addr();
    let b = browser().await;
    sign_in_as(
        &b.client,
        addr,
        "token",
        &crate::server_support::token("alice"),
    )
    .await;
    start(&b.client, "assistant", "What is 3*3?", None).await;
    wait_newest_run(&b.client, "completed").await;
    let thread = js(&b.client, "return window.chat.state.thread").await;
    assert!(
        thread.as_str().is_some_and(|t| t.starts_with("thr_")),
        "{thread}"
    );

    let again = restart_keeping_history(server, store, &b.client).await;
    let shown = js(&b.client, "return [...document.querySelectorAll('#conversation > .run')].map(r => [r.dataset.state, r.querySelector('.answer').textContent])").await;
    let shown = shown.as_array().unwrap();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0][0], "completed");
    assert!(shown[0][1].as_str().unwrap().contains('9'), "{shown:?}");
    assert_eq!(
        js(&b.client, "return window.chat.state.thread").await,
        thread
    );

    // A follow-up continues the thread (the server accepts it in the same thread).
    start(&b.client, "assistant", "What is 4*4?", None).await;
    wait_js(
        &b.client,
        "the follow-up completed",
        "return document.querySelectorAll('#conversation > .run').length === 2 \
         && [...document.querySelectorAll('#conversation > .run')].pop().dataset.state === 'completed'",
    )
    .await;
    assert_eq!(
        js(&b.client, "return window.chat.state.thread").await,
        thread
    );
    let answer = js(
        &b.client,
        "return [...document.querySelectorAll('#conversation > .run .answer')].pop().textContent",
    )
    .await;
    assert!(answer.as_str().unwrap().contains("16"), "{answer}");
    again.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
