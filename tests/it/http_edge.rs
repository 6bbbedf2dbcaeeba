//! The HTTP edge as a browser and an abusive client meet it: the security headers, the
//! origin check on the socket and the API, CORS for listed origins, and the HTTP API's rate
//! limits (429 with `Retry-After`, per user and per address, counted in `/metrics`).

use std::net::SocketAddr;

use agent_server::config::ServerConfig;
use agent_server::config::{AllowedOrigins, HttpRates};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::server_support::{Client, ConnectError, start_server, token};

const LISTED: &str = "http://allowed.test:3000";

/// A temporary SQLite history, removed when dropped.
struct TempStore(std::path::PathBuf);

impl TempStore {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "agent-it-http-edge-{}",
            core_context::RunId::generate()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.join("history.db").display())
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A request's status, headers and JSON body (`null` when the body is not JSON).
async fn send(request: reqwest::RequestBuilder) -> (u16, HeaderMap, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

fn get(
    addr: SocketAddr,
    path: &str,
    user: Option<&str>,
    origin: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = crate::support::http_client().get(format!("http://{addr}{path}"));
    if let Some(user) = user {
        request = request.bearer_auth(token(user));
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request
}

/// `GET /` and an API answer carry the security headers; the page's policy runs no inline
/// script and talks to this server only; the page's script and styles are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let server = start_server(|_| {}).await;
    let addr = server.addr();
    for path in [
        "/",
        "/v1/me",
        "/static/app.js",
        "/static/app.css",
        "/no-such-route",
    ] {
        let (_, headers, _) = send(get(addr, path, Some("alice"), None)).await;
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            header("referrer-policy").as_deref(),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(header("x-frame-options").as_deref(), Some("DENY"), "{path}");
        let csp = header("content-security-policy").unwrap_or_default();
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        for wanted in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(directives.contains(&wanted), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
    }
    for (path, content_type) in [
        ("/static/app.js", "text/javascript"),
        ("/static/app.css", "text/css"),
    ] {
        let (status, headers, _) = send(get(addr, path, None, None)).await;
        assert_eq!(status, 200, "{path}");
        let got = headers["content-type"].to_str().unwrap();
        assert!(got.starts_with(content_type), "{path}: {got}");
    }
    server.shutdown().await;
}

/// What one request got: its status and, when refused, the error code.
async fn outcome(addr: SocketAddr, route: &str, origin: Option<&str>) -> (u16, Value) {
    match route {
        "ws" => {
            let mut request = format!("ws://{addr}/ws?token={}", token("origin-user"))
                .into_client_request()
                .unwrap();
            if let Some(origin) = origin {
                request
                    .headers_mut()
                    .insert("origin", origin.parse().unwrap());
            }
            match Client::connect_request(request).await {
                Ok(_client) => (101, Value::Null),
                Err(ConnectError::Http(status, body)) => {
                    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        "threads" => {
            let (status, _, body) =
                send(get(addr, "/v1/threads", Some("origin-user"), origin)).await;
            (status, body)
        }
        "agui" => {
            let body = json!({"threadId": "t-origin", "runId": "r", "state": {}, "tools": [], "context": [],
                "messages": [{"id": "m1", "role": "user", "content": "hi"}]});
            let mut request = crate::support::http_client()
                .post(format!("http://{addr}/agui/assistant"))
                .bearer_auth(token("origin-user"))
                .json(&body);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            // A started run streams until it ends; only a refusal's body is read.
            if status == 200 {
                return (status, Value::Null);
            }
            (status, response.json().await.unwrap_or(Value::Null))
        }
        other => panic!("no route {other}"),
    }
}

/// The socket, the history API and AG-UI take requests without `Origin` (clients that are
/// not browsers), from the server's own page, and from a listed origin; a page of any other
/// origin gets 403 `origin_not_allowed` naming its origin and the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_and_the_api_take_only_allowed_origins() {
    let store = TempStore::new();
    let url = store.url();
    let server = start_server(move |c| {
        c.store = Some(url);
        c.allowed_origins = AllowedOrigins::parse(&[LISTED]).unwrap();
    })
    .await;
    let addr = server.addr();
    let own = format!("http://{addr}");
    let other_port = format!("http://127.0.0.1:{}", addr.port() + 1);
    let ok = |route: &str| if route == "ws" { 101 } else { 200 };
    for route in ["ws", "threads", "agui"] {
        for (origin, allowed) in [
            (None, true),
            (Some(own.as_str()), true),
            (Some(LISTED), true),
            (Some("http://evil.test"), false),
            (Some(other_port.as_str()), false),
            (Some("https://allowed.test:3000"), false),
            (Some("null"), false),
        ] {
            let (status, body) = outcome(addr, route, origin).await;
            if allowed {
                assert_eq!(status, ok(route), "{route} from {origin:?}: {body}");
            } else {
                assert_eq!(status, 403, "{route} from {origin:?}: {body}");
                assert_eq!(body["error"], "origin_not_allowed", "{body}");
                let message = body["message"].as_str().unwrap();
                assert!(
                    message.contains(origin.unwrap()) && message.contains("--allowed-origins"),
                    "{message}"
                );
            }
        }
    }
    server.shutdown().await;
}

/// A preflight from a listed origin is answered with the methods and headers the API takes;
/// one from another origin gets 403 and no CORS header, so the browser sends nothing after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_listed_origins_only() {
    let server =
        start_server(|c| c.allowed_origins = AllowedOrigins::parse(&[LISTED]).unwrap()).await;
    let addr = server.addr();
    for path in ["/v1/threads", "/agui/assistant"] {
        for (origin, listed) in [(LISTED, true), ("http://evil.test", false)] {
            let preflight = crate::support::http_client()
                .request(reqwest::Method::OPTIONS, format!("http://{addr}{path}"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                );
            let (status, headers, _) = send(preflight).await;
            let header = |name: &str| {
                headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_lowercase())
            };
            if listed {
                assert_eq!(status, 200, "{path}");
                assert_eq!(
                    header("access-control-allow-origin").as_deref(),
                    Some(LISTED),
                    "{path}"
                );
                let allowed = header("access-control-allow-headers").unwrap_or_default();
                assert!(
                    allowed.contains("authorization") && allowed.contains("content-type"),
                    "{allowed}"
                );
                let methods = header("access-control-allow-methods").unwrap_or_default();
                assert!(
                    methods.contains("post") && methods.contains("get"),
                    "{methods}"
                );
            } else {
                assert_eq!(
                    header("access-control-allow-origin"),
                    None,
                    "{path} from {origin}"
                );
                assert_eq!(
                    header("access-control-allow-headers"),
                    None,
                    "{path} from {origin}"
                );
            }
        }
    }
    // The answer itself names the listed origin, and lets its page read `Retry-After`.
    let (_, headers, _) = send(get(addr, "/v1/me", Some("alice"), Some(LISTED))).await;
    assert_eq!(headers["access-control-allow-origin"], LISTED);
    assert!(
        headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_lowercase()
            .contains("retry-after")
    );
    server.shutdown().await;
}

/// The `agent_server_http_rate_limited_total` samples of a scrape, by `route,key`.
async fn rate_limited(addr: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let text = crate::support::metrics_text(addr).await;
    text.lines()
        .filter_map(|line| line.strip_prefix("agent_server_http_rate_limited_total{"))
        .filter_map(|rest| rest.split_once("} "))
        .map(|(labels, value)| (labels.replace('"', ""), value.parse().unwrap()))
        .collect()
}

/// Checks a 429: `Retry-After` in whole seconds within `max_secs`, the `rate_limited` body
/// naming the flag that sets the limit.
fn check_limited((status, headers, body): &(u16, HeaderMap, Value), flag: &str, max_secs: u64) {
    assert_eq!(*status, 429, "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=max_secs).contains(&retry), "Retry-After {retry}");
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert!(body["message"].as_str().unwrap().contains(flag), "{body}");
}

/// Past the per-user limit a user gets 429 with `Retry-After` while another user is served;
/// past the per-address limit every user from that address waits; each is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_rate_limited_per_user_and_per_address() {
    let store = TempStore::new();
    let url = store.url();
    let server = start_server(move |c| {
        c.store = Some(url);
        c.http_rates = HttpRates {
            per_user_per_minute: 5,
            per_address_per_minute: 9,
            ..HttpRates::default()
        };
    })
    .await;
    let addr = server.addr();
    for _ in 0..5 {
        assert_eq!(
            send(get(addr, "/v1/threads", Some("greedy"), None)).await.0,
            200
        );
    }
    let refused = send(get(addr, "/v1/threads", Some("greedy"), None)).await;
    // Five a minute: one comes back every 12 s.
    check_limited(&refused, "--http-rate-per-user-per-minute", 12);
    assert_eq!(
        send(get(addr, "/v1/threads", Some("patient"), None))
            .await
            .0,
        200
    );
    // Nine from this address so far (five, the refused one, one by `patient`, two more).
    for _ in 0..2 {
        assert_eq!(
            send(get(addr, "/v1/me", Some("patient"), None)).await.0,
            200
        );
    }
    let refused = send(get(addr, "/v1/threads", Some("third"), None)).await;
    check_limited(&refused, "--http-rate-per-address-per-minute", 7);
    let counted = rate_limited(addr).await;
    assert_eq!(
        counted.get("route=history,key=user"),
        Some(&1.0),
        "{counted:?}"
    );
    assert_eq!(
        counted.get("route=history,key=address"),
        Some(&1.0),
        "{counted:?}"
    );
    assert_eq!(
        counted.get("route=agui,key=user"),
        Some(&0.0),
        "{counted:?}"
    );
    server.shutdown().await;
}

/// `POST /dev/token` is limited per address: a script cannot mint tokens in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_tokens_are_rate_limited_per_address() {
    let server = server_without_secret(3).await;
    let addr = server.addr();
    let mint = |user: &str| {
        crate::support::http_client()
            .post(format!("http://{addr}/dev/token"))
            .json(&json!({"user": user}))
    };
    for user in ["dev-a", "dev-b", "dev-c"] {
        let (status, _, body) = send(mint(user)).await;
        assert_eq!(status, 200, "{body}");
    }
    check_limited(
        &send(mint("dev-d")).await,
        "--dev-token-rate-per-address-per-minute",
        20,
    );
    assert_eq!(
        rate_limited(addr).await.get("route=dev_token,key=address"),
        Some(&1.0)
    );
    server.shutdown().await;
}

/// A dev-token server takes requests for loopback names only: a site its owner pointed at
/// 127.0.0.1 (DNS rebinding) is its own origin to the browser, and is refused all the same,
/// with or without `Origin`. A server with a configured secret serves any `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_token_server_refuses_hosts_that_are_not_loopback() {
    let server = server_without_secret(100).await;
    let addr = server.addr();
    let port = addr.port();
    let mint = |host: &str, origin: bool| {
        let mut request = crate::support::http_client()
            .post(format!("http://{addr}/dev/token"))
            .header("host", host)
            .json(&json!({"user": "dev-a"}));
        if origin {
            request = request.header("origin", format!("http://{host}"));
        }
        request
    };
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (status, _, body) = send(mint(&host, true)).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    let rebound = format!("rebound.example:{port}");
    for origin in [true, false] {
        let (status, _, body) = send(mint(&rebound, origin)).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "origin_not_allowed", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("rebound.example") && message.contains("localhost"),
            "{message}"
        );
    }
    let socket = get(addr, "/ws", None, None).header("host", &rebound);
    assert_eq!(send(socket).await.0, 403);
    server.shutdown().await;

    let server = start_server(|_| {}).await;
    let addr = server.addr();
    let me = get(addr, "/v1/me", Some("host-user"), None).header("host", "chat.example.com");
    assert_eq!(send(me).await.0, 200);
    server.shutdown().await;
}

/// A server with a generated secret (so it serves `/dev/token`) and `per_minute` dev tokens
/// per address.
async fn server_without_secret(per_minute: u32) -> agent_server::server::RunningServer {
    let config = ServerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        http_rates: HttpRates {
            dev_token_per_address_per_minute: per_minute,
            ..HttpRates::default()
        },
        ..ServerConfig::default()
    };
    agent_server::server::RunningServer::start(config)
        .await
        .unwrap()
}
