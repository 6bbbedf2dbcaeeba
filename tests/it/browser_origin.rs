//! Another site in a real browser: a page served from another origin (another port) holds a
//! valid token and tries to open the user's socket and read their threads. The server refuses
//! both unless `--allowed-origins` names that origin; the same page against a server that
//! lists it succeeds, so the refusal is the origin check's doing and the page can tell.

use std::net::SocketAddr;

use agent_server::config::AllowedOrigins;
use axum::response::Html;
use serde_json::{Value, json};

use crate::browser::{browser, js, wait_js};
use crate::server_support::{start_server, token};

/// A page that opens `ws://TARGET/ws?token=TOKEN` and fetches `http://TARGET/v1/threads`
/// with the token (both from its query), and records in `window.outcome` what happened.
const OTHER_SITE: &str = r#"<!doctype html><title>another site</title><script>
const query = new URLSearchParams(location.search);
const target = query.get("target"), token = query.get("token");
window.outcome = { ws: "pending", fetch: "pending" };
const ws = new WebSocket(`ws://${target}/ws?token=${token}`);
ws.onopen = () => { outcome.ws = "open"; ws.close(); };
ws.onerror = () => { if (outcome.ws === "pending") outcome.ws = "error"; };
ws.onclose = (e) => { if (outcome.ws === "pending") outcome.ws = `closed ${e.code}`; };
fetch(`http://${target}/v1/threads`, { headers: { authorization: `Bearer ${token}` } })
  .then((r) => { outcome.fetch = `status ${r.status}`; }, (e) => { outcome.fetch = `refused: ${e}`; });
</script>"#;

/// Serves [`OTHER_SITE`] at `/` on a port of its own: another origin than the servers'.
async fn serve_other_site() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { Html(OTHER_SITE) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// What the other site's page saw when it aimed at `target`, once both attempts ended.
async fn attempt(client: &fantoccini::Client, site: SocketAddr, target: SocketAddr) -> Value {
    let victim = token("victim");
    let url = format!("http://{site}/?target={target}&token={victim}");
    client.goto(&url).await.unwrap();
    wait_js(
        client,
        "both attempts of the other site's page have ended",
        "return !!window.outcome && outcome.ws !== 'pending' && outcome.fetch !== 'pending'",
    )
    .await;
    js(client, "return window.outcome").await
}

/// The refusals with `code` a server counted.
async fn refusals(addr: SocketAddr, code: &str) -> f64 {
    let text = crate::support::metrics_text(addr).await;
    let sample = format!("agent_server_refusals_total{{code=\"{code}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&sample))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_cannot_use_a_users_token() {
    let site = serve_other_site().await;
    let strict = start_server(|_| {}).await;
    let listed = format!("http://{site}");
    let lenient = start_server(move |c| {
        c.allowed_origins = AllowedOrigins::parse(&[listed]).unwrap();
    })
    .await;
    let browser = browser().await;
    let client = &browser.client;

    // A server that does not list the site: the socket never opens, and the fetch fails
    // (its preflight got a 403 without CORS headers). The server itself refused both.
    let refused = attempt(client, site, strict.addr()).await;
    assert_ne!(refused["ws"], "open", "{refused}");
    assert!(
        refused["fetch"].as_str().unwrap().starts_with("refused:"),
        "{refused}"
    );
    assert_eq!(strict.state().open_connections(), 0);
    assert_eq!(
        refusals(strict.addr(), "origin_not_allowed").await,
        2.0,
        "the upgrade and the preflight"
    );

    // The same page against a server that lists the site: both go through (the server keeps
    // no history, so the API answers 404, which the page reads thanks to CORS).
    let allowed = attempt(client, site, lenient.addr()).await;
    assert_eq!(allowed, json!({"ws": "open", "fetch": "status 404"}));
    assert_eq!(refusals(lenient.addr(), "origin_not_allowed").await, 0.0);
    drop(browser);
    strict.shutdown().await;
    lenient.shutdown().await;
}
