//! Conversations everywhere at once, in real browsers: two windows of one user, on one node
//! and on two nodes (Redis for the streams, Postgres for the history). A conversation started
//! in one window appears in the other's list without a reload; a window showing a
//! conversation shows, live and answered, a run started in it elsewhere (in a window, or from a
//! third client). The user's stream carries them all: each list follows the user's runs,
//! wherever they run, and looks again while the history lags the stream across nodes.
//!
//! A rename or a deletion made elsewhere (`thread_renamed`, `thread_deleted` on the stream)
//! shows in both lists; a window showing a conversation deleted elsewhere says so.

use std::net::SocketAddr;

use fantoccini::Client;
use serde_json::json;

use crate::browser::{browser, js, sign_in_as, start, wait_js, wait_newest_run};
use crate::history_server::http_sending;
use crate::server_support::{Client as SocketClient, start_server, token};
use crate::thread_changes::TwoNodes;

/// The titles of the window's list of conversations, newest first, as a JS array literal.
fn titles_are(titles: &[&str]) -> String {
    let wanted = serde_json::to_string(titles).unwrap();
    format!(
        "return JSON.stringify([...document.querySelectorAll('#threads .title')].map(t => t.textContent)) === '{}'",
        wanted.replace('\'', "\\'")
    )
}

/// Waits until `client`'s list of conversations is `titles` (newest first).
async fn wait_titles(client: &Client, what: &str, titles: &[&str]) {
    wait_js(client, what, &titles_are(titles)).await;
}

/// The story, with window one on `one` and window two on `two` (the same node or two).
async fn two_windows_follow_each_other(one: SocketAddr, two: SocketAddr) {
    let first = browser().await;
    let second = browser().await;
    first.client.set_window_size(1280, 900).await.unwrap();
    second.client.set_window_size(1280, 900).await.unwrap();
    sign_in_as(&first.client, one, "token", &token("alice")).await;
    sign_in_as(&second.client, two, "token", &token("alice")).await;

    // A new conversation in window one appears in window two's list.
    start(&first.client, "assistant", "What is 2+2?", None).await;
    wait_newest_run(&first.client, "completed").await;
    wait_titles(
        &second.client,
        "window two lists the new conversation",
        &["What is 2+2?"],
    )
    .await;

    // Window two opens it; a second message from window one shows there live, answered.
    js(
        &second.client,
        "document.querySelector('#threads li .open').click(); return true",
    )
    .await;
    wait_js(
        &second.client,
        "window two shows the conversation",
        "return document.querySelectorAll('#conversation > .run').length === 1",
    )
    .await;
    start(&first.client, "assistant", "What is 3+3?", None).await;
    wait_js(
        &second.client,
        "window two shows the run started in window one, answered",
        "const runs = document.querySelectorAll('#conversation > .run'); \
         return runs.length === 2 && runs[1].dataset.state === 'completed' \
           && runs[1].textContent.includes('3+3') && runs[1].textContent.includes('6')",
    )
    .await;

    // A third client of the user (on node one) starts another conversation: both lists have
    // it; then a run in the first one, which window two shows.
    let mut third = SocketClient::user(one, "alice").await;
    let mut tokyo = None;
    third
        .start_in_thread("assistant", "What time is it in Tokyo?", &mut tokyo)
        .await;
    third.events_until_terminals(1).await;
    for window in [&first.client, &second.client] {
        wait_titles(
            window,
            "both lists have the third client's conversation on top",
            &["What time is it in Tokyo?", "What is 2+2?"],
        )
        .await;
    }
    let mut sums = js(
        &first.client,
        "return document.querySelector('#threads li:last-child').dataset.threadId",
    )
    .await
    .as_str()
    .map(str::to_owned);
    third
        .start_in_thread("assistant", "What is 4+4?", &mut sums)
        .await;
    third.events_until_terminals(1).await;
    // Window two, showing that conversation, shows the third client's run too.
    wait_js(
        &second.client,
        "window two shows the third client's run",
        "const runs = document.querySelectorAll('#conversation > .run'); \
         return runs.length === 3 && runs[2].textContent.includes('8')",
    )
    .await;

    // Renamed elsewhere: both lists show the new title. Deleted elsewhere: both lists drop
    // it, and window two, which showed it, says so and starts afresh.
    let path = format!("/v1/threads/{}", sums.as_deref().unwrap());
    let (status, _) = http_sending(one, "PATCH", &path, Some("alice"), r#"{"title":"Sums"}"#).await;
    assert_eq!(status, 200);
    for window in [&first.client, &second.client] {
        wait_titles(
            window,
            "both lists show the new title",
            &["What time is it in Tokyo?", "Sums"],
        )
        .await;
    }
    let (status, _) = http_sending(one, "DELETE", &path, Some("alice"), "").await;
    assert_eq!(status, 204);
    for window in [&first.client, &second.client] {
        wait_titles(window, "both lists drop it", &["What time is it in Tokyo?"]).await;
    }
    wait_js(
        &second.client,
        "window two says the conversation it showed was deleted, and shows none",
        "return document.getElementById('notices').innerText.includes('deleted in another window') \
         && document.querySelectorAll('#conversation > .run').length === 0",
    )
    .await;
    for window in [&first.client, &second.client] {
        let stats = js(window, "return window.chat.stats").await;
        assert_eq!(
            (&stats["gaps"], &stats["duplicates"]),
            (&json!(0), &json!(0)),
            "{stats}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_node_two_windows_follow_each_others_conversations() {
    let dir = crate::approvals::store_dir();
    let store = crate::approvals::sqlite(&dir);
    let server = start_server(move |c| c.store = Some(store)).await;
    two_windows_follow_each_other(server.addr(), server.addr()).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_two_nodes_two_windows_follow_each_others_conversations() {
    let nodes = TwoNodes::start().await;
    two_windows_follow_each_other(nodes.a.addr(), nodes.b.addr()).await;
    nodes.shutdown().await;
}
