//! The chat page for a newcomer, in a real browser (see `browser.rs` for the driver): a name
//! typed as a person types it signs in as its user id, and a placeholder name is refused
//! with the names that work; a long thread opens at its newest runs in one request and shows
//! the earlier ones on request; on a phone the list of conversations is a drawer that closes
//! by its button, a tap beside it or Escape.

use fantoccini::Locator;
use serde_json::json;

use crate::browser::{artifact, browser, js, sign_in_as, wait_js};
use crate::browser_chat::sign_in_reason;
use crate::server_support::{start_server, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_as_typed_signs_in_as_its_user_id_and_a_placeholder_says_what_works() {
    let server = start_server(|c| c.jwt_secret = None).await;
    let addr = server.addr();
    let b = browser().await;
    b.client.goto(&format!("http://{addr}/")).await.unwrap();
    let field = b.client.find(Locator::Id("user")).await.unwrap();
    field.send_keys("test").await.unwrap();
    field.send_keys("\u{E007}").await.unwrap();
    let reason = sign_in_reason(&b.client, "a placeholder name is refused").await;
    assert!(
        reason.contains("placeholder") && reason.contains("any other name works"),
        "{reason}"
    );
    // Spaces and capitals: the user id derived from the name is who the page signs in as.
    crate::browser::sign_in(&b.client, addr, "Alice Smith").await;
    assert_eq!(
        js(
            &b.client,
            "return document.getElementById('who').textContent"
        )
        .await,
        "alice-smith"
    );
    let notices = js(
        &b.client,
        "return document.getElementById('notices').innerText",
    )
    .await;
    assert!(
        notices
            .as_str()
            .unwrap()
            .contains("Signed in as alice-smith"),
        "{notices}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_thread_opens_at_its_newest_runs_and_shows_earlier_ones_on_request() {
    let dir = crate::approvals::store_dir();
    let store = crate::approvals::sqlite(&dir);
    let server = start_server(move |c| {
        c.store = Some(store);
        c.start_rate_per_minute = 1_000;
    })
    .await;
    let addr = server.addr();
    // A thread of 35 runs, made over the socket.
    let mut alice = crate::server_support::Client::user(addr, "alice").await;
    let mut thread: Option<String> = None;
    for i in 0..35 {
        let message = format!("What is {i}+1?");
        alice
            .start_in_thread("assistant", &message, &mut thread)
            .await;
        alice.events_until_terminals(1).await;
    }
    let b = browser().await;
    sign_in_as(&b.client, addr, "token", &token("alice")).await;
    wait_js(
        &b.client,
        "the newest 30 runs show, with a button for the earlier ones",
        "return window.chat.stats.stored === 30 && !!document.querySelector('#conversation > .earlier')",
    )
    .await;
    let first_shown =
        "return document.querySelector('#conversation > .run .bubble .text').textContent";
    assert_eq!(js(&b.client, first_shown).await, "What is 5+1?");
    b.client
        .find(Locator::Css("#conversation > .earlier"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &b.client,
        "the earlier runs show above, and the button goes",
        "return window.chat.stats.stored === 35 && !document.querySelector('#conversation > .earlier')",
    )
    .await;
    let order = js(
        &b.client,
        "return [...document.querySelectorAll('#conversation > .run .bubble .text')].map(t => t.textContent)",
    )
    .await;
    let want: Vec<String> = (0..35).map(|i| format!("What is {i}+1?")).collect();
    assert_eq!(order, json!(want));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_the_conversation_list_closes_by_its_button_a_tap_beside_it_or_escape() {
    let dir = crate::approvals::store_dir();
    let store = crate::approvals::sqlite(&dir);
    let server = start_server(move |c| c.store = Some(store)).await;
    let b = browser().await;
    b.client.set_window_size(420, 900).await.unwrap();
    sign_in_as(&b.client, server.addr(), "token", &token("alice")).await;
    // The drawer is fixed in place, so it has no offsetParent: its computed display says.
    let open = "return getComputedStyle(document.getElementById('sidebar')).display !== 'none'";
    let toggle = || async {
        b.client
            .find(Locator::Id("sidebar-toggle"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_js(&b.client, "the drawer opens", open).await;
    };
    // Open: its close button has the focus, and a backdrop covers the rest of the page.
    toggle().await;
    assert_eq!(
        js(
            &b.client,
            "return [document.activeElement.id, document.elementFromPoint(400, 450).id]"
        )
        .await,
        json!(["sidebar-close", "sidebar-backdrop"])
    );
    artifact(&b.client, "chat-sidebar-drawer-narrow.png").await;
    let closed = "return getComputedStyle(document.getElementById('sidebar')).display === 'none' \
                  && document.activeElement.id === 'sidebar-toggle' \
                  && document.getElementById('sidebar-toggle').getAttribute('aria-expanded') === 'false'";
    // Escape closes it.
    b.client
        .active_element()
        .await
        .unwrap()
        .send_keys("\u{E00C}")
        .await
        .unwrap();
    wait_js(&b.client, "Escape closed the drawer", closed).await;
    // A tap beside it closes it.
    toggle().await;
    js(
        &b.client,
        "document.elementFromPoint(400, 450).click(); return true",
    )
    .await;
    wait_js(&b.client, "a tap beside the drawer closed it", closed).await;
    // Its own button closes it.
    toggle().await;
    b.client
        .find(Locator::Id("sidebar-close"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(&b.client, "the close button closed the drawer", closed).await;
    server.shutdown().await;
}
