//! The history over real sockets and HTTP: every user sees only their own threads and runs
//! (another user's read and delete answer 404 like a missing one), and the history outlives
//! the server: complete after a graceful restart, `interrupted` after a kill mid-run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agent_server::config::ServerConfig;
use agent_server::server::RunningServer;
use serde_json::{Value, json};

use crate::server_support::{Client, KillableServer, start_server, token};

/// A temp dir for a SQLite file, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "agent-it-store-{}-{}",
            std::process::id(),
            core_context::RunId::generate()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn store(&self) -> String {
        format!("sqlite://{}", self.0.join("history.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Settings of a server keeping its history at `store`.
fn with_store(store: &str) -> impl FnOnce(&mut ServerConfig) + Send + use<> {
    let store = store.to_owned();
    move |config| {
        config.store = Some(store);
        config.start_rate_per_minute = 1_000;
        config.shutdown_grace = Duration::from_millis(50);
    }
}

async fn server(store: &str) -> RunningServer {
    start_server(with_store(store)).await
}

/// One HTTP/1.1 request as `user`; returns the status and the JSON body (`Null` if none).
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user: Option<&str>,
) -> (u16, Value) {
    let (status, body) = http_text(addr, method, path, user).await;
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body:?} is not JSON: {e}"))
    };
    (status, body)
}

/// One HTTP request (with `user`'s token, if any); the status and the body as text.
pub(crate) async fn http_text(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user: Option<&str>,
) -> (u16, String) {
    http_sending(addr, method, path, user, "").await
}

/// One HTTP request with a JSON `body` (with `user`'s token, if any); the status and the
/// body as text.
pub(crate) async fn http_sending(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user: Option<&str>,
    body: &str,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = crate::support::http_client()
        .request(method, format!("http://{addr}{path}"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(Duration::from_secs(10))
        .body(body.to_owned());
    if let Some(user) = user {
        request = request.bearer_auth(token(user));
    }
    let response = request.send().await.expect("an HTTP answer within 10 s");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Starts a run and reads the user's events until it ends; returns (run id, thread id).
pub(crate) async fn run_to_end(
    client: &mut Client,
    request: &str,
    thread: Option<&str>,
) -> (String, String) {
    let mut payload = json!({"agent": "synthetic", "message": format!("question {request}"),
                             "input": {"thinking": 1, "tools": 1, "chunks": 1}});
    if let Some(thread) = thread {
        payload["thread_id"] = json!(thread);
    }
    client
        .send(json!({"type": "start_agent", "request_id": request, "payload": payload}))
        .await;
    let accepted = client.reply().await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let run = accepted["run_id"].as_str().unwrap().to_owned();
    loop {
        let frame = client.next().await;
        if frame["run_id"] == run.as_str() && frame["type"] == "agent_completed" {
            break;
        }
    }
    (run, accepted["thread_id"].as_str().unwrap().to_owned())
}

/// Polls until `path` answers 200 for `user` with a body `ready` accepts (the writer stores
/// in the background).
pub(crate) async fn eventually(
    addr: SocketAddr,
    path: &str,
    user: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..200 {
        let (status, body) = http(addr, "GET", path, Some(user)).await;
        if status == 200 && ready(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never became ready for {user}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_user_reads_and_erases_only_their_own_history() {
    let dir = TempDir::new();
    let node = server(&dir.store()).await;
    let addr = node.addr();
    let users: Vec<String> = (0..100).map(|u| format!("hist{u:03}")).collect();
    let mut tasks = Vec::new();
    for user in users.clone() {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::user(addr, &user).await;
            let (first, thread_a) = run_to_end(&mut client, "a1", None).await;
            run_to_end(&mut client, "a2", Some(&thread_a)).await;
            let (_, thread_b) = run_to_end(&mut client, "b1", None).await;
            (user, first, thread_a, thread_b)
        }));
    }
    let mut owned = Vec::new();
    for task in tasks {
        owned.push(task.await.unwrap());
    }
    for (user, first, thread_a, thread_b) in &owned {
        let listed = eventually(addr, "/v1/threads", user, |b| {
            b["threads"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
        let ids: Vec<&str> = listed["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["thread_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [thread_b.as_str(), thread_a.as_str()],
            "{user}: newest first"
        );
        let thread = eventually(addr, &format!("/v1/threads/{thread_a}"), user, |b| {
            b["runs"]
                .as_array()
                .is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["status"] == "completed"))
        })
        .await;
        assert_eq!(thread["title"], "question a1", "{user}");
        let run = eventually(addr, &format!("/v1/runs/{first}"), user, |b| {
            b["status"] == "completed"
        })
        .await;
        let types: Vec<&str> = run["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "agent_started",
                "agent_thinking",
                "tool_executing",
                "tool_completed",
                "agent_response_chunk",
                "agent_completed"
            ],
            "{user}"
        );
    }
    // Another user's thread and run read, and delete, exactly like missing ones.
    let (alice, alice_run, alice_thread, _) = &owned[0];
    let (bob, ..) = &owned[1];
    let missing_thread = "thr_01JD6QA0B1C2D3E4F5G6H7J8K9";
    let missing_run = "run_01JD6QA0B1C2D3E4F5G6H7J8K9";
    for (method, theirs, missing) in [
        (
            "GET",
            format!("/v1/threads/{alice_thread}"),
            format!("/v1/threads/{missing_thread}"),
        ),
        (
            "DELETE",
            format!("/v1/threads/{alice_thread}"),
            format!("/v1/threads/{missing_thread}"),
        ),
        (
            "GET",
            format!("/v1/runs/{alice_run}"),
            format!("/v1/runs/{missing_run}"),
        ),
    ] {
        let (status, body) = http(addr, method, &theirs, Some(bob)).await;
        let (missing_status, missing_body) = http(addr, method, &missing, Some(bob)).await;
        assert_eq!((status, missing_status), (404, 404), "{method} {theirs}");
        assert_eq!(body["error"], missing_body["error"], "{method} {theirs}");
    }
    assert_eq!(http(addr, "GET", "/v1/threads", None).await.0, 401);
    assert_eq!(
        http(addr, "GET", "/v1/threads?limit=0", Some(bob)).await.0,
        400
    );
    assert_eq!(
        http(addr, "GET", "/v1/threads?cursor=x", Some(bob)).await.0,
        400
    );
    // Alice erases her thread: it is gone for her, and bob's history is untouched.
    assert_eq!(
        http(
            addr,
            "DELETE",
            &format!("/v1/threads/{alice_thread}"),
            Some(alice)
        )
        .await
        .0,
        204
    );
    assert_eq!(
        http(
            addr,
            "GET",
            &format!("/v1/threads/{alice_thread}"),
            Some(alice)
        )
        .await
        .0,
        404
    );
    assert_eq!(
        http(addr, "GET", &format!("/v1/runs/{alice_run}"), Some(alice))
            .await
            .0,
        404
    );
    let (_, bobs) = http(addr, "GET", "/v1/threads", Some(bob)).await;
    assert_eq!(bobs["threads"].as_array().unwrap().len(), 2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_outlives_restarts_and_a_killed_run_is_interrupted() {
    let dir = TempDir::new();
    // A graceful restart keeps every completed run with every event.
    let first = server(&dir.store()).await;
    let mut client = Client::user(first.addr(), "frank").await;
    let (done, thread) = run_to_end(&mut client, "r1", None).await;
    drop(client);
    first.shutdown().await;
    // A crash mid-run: the run is stored as running, then the server dies.
    let mut doomed = KillableServer::start(with_store(&dir.store()));
    let mut client = Client::user(doomed.addr, "frank").await;
    client
        .send(json!({"type": "start_agent", "request_id": "r2", "payload": {"agent": "synthetic",
            "message": "hang", "thread_id": thread, "input": {"thinking": 1, "tools": 0, "chunks": 0, "hang": true}}}))
        .await;
    let accepted = client.reply().await;
    let hanging = accepted["run_id"].as_str().unwrap().to_owned();
    eventually(doomed.addr, &format!("/v1/runs/{hanging}"), "frank", |b| {
        b["events"].as_array().is_some_and(|e| e.len() == 2)
    })
    .await;
    doomed.kill();
    // The next start marks it interrupted; the completed run is whole.
    let again = server(&dir.store()).await;
    let addr = again.addr();
    let (status, run) = http(addr, "GET", &format!("/v1/runs/{done}"), Some("frank")).await;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "completed");
    assert_eq!(run["events"].as_array().unwrap().len(), 6);
    let (_, lost) = http(addr, "GET", &format!("/v1/runs/{hanging}"), Some("frank")).await;
    assert_eq!(lost["status"], "interrupted", "{lost}");
    assert_eq!(lost["events"].as_array().unwrap().len(), 2, "{lost}");
    let (_, detail) = http(addr, "GET", &format!("/v1/threads/{thread}"), Some("frank")).await;
    let statuses: Vec<&str> = detail["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "interrupted"]);
    // After the restart the thread is still frank's: he continues it, grace cannot.
    let mut grace = Client::user(addr, "grace").await;
    grace
        .send(
            json!({"type": "start_agent", "request_id": "g1", "payload": {"agent": "synthetic",
            "message": "mine now?", "thread_id": thread}}),
        )
        .await;
    let refused = grace.reply().await;
    assert_eq!(refused["code"], "thread_not_found", "{refused}");
    let mut frank = Client::user(addr, "frank").await;
    let (_, continued) = run_to_end(&mut frank, "r3", Some(&thread)).await;
    assert_eq!(continued, thread);
    again.shutdown().await;
}

/// Two nodes share one history on Postgres: a run on one node is read, continued and erased
/// through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_on_postgres_share_one_history() {
    let postgres = crate::postgres_support::PostgresServer::start();
    let url = postgres.url();
    // The server's first connection may meet a database still starting up.
    let mut first = None;
    for _ in 0..100 {
        if history::SqlStore::connect(&url).await.is_ok() {
            first = Some(server(&url).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = first.expect("postgres came up");
    let b = server(&url).await;
    let mut on_a = Client::user(a.addr(), "ivy").await;
    let (run, thread) = run_to_end(&mut on_a, "r1", None).await;
    let detail = eventually(b.addr(), &format!("/v1/runs/{run}"), "ivy", |r| {
        r["status"] == "completed"
    })
    .await;
    assert_eq!(detail["events"].as_array().unwrap().len(), 6);
    // The thread started on node A continues on node B, and is still ivy's alone.
    let mut on_b = Client::user(b.addr(), "ivy").await;
    let (_, continued) = run_to_end(&mut on_b, "r2", Some(&thread)).await;
    assert_eq!(continued, thread);
    let listed = eventually(a.addr(), &format!("/v1/threads/{thread}"), "ivy", |t| {
        t["runs"].as_array().is_some_and(|r| r.len() == 2)
    })
    .await;
    assert_eq!(listed["title"], "question r1");
    assert_eq!(
        http(
            a.addr(),
            "GET",
            &format!("/v1/threads/{thread}"),
            Some("jack")
        )
        .await
        .0,
        404
    );
    assert_eq!(
        http(
            b.addr(),
            "DELETE",
            &format!("/v1/threads/{thread}"),
            Some("ivy")
        )
        .await
        .0,
        204
    );
    assert_eq!(
        http(
            a.addr(),
            "GET",
            &format!("/v1/threads/{thread}"),
            Some("ivy")
        )
        .await
        .0,
        404
    );
    for node in [a, b] {
        node.shutdown().await;
    }
}

/// `PATCH /v1/threads/{id}` renames the user's own thread; another user's reads like a
/// missing one; a bad title or body is refused with what is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_thread_checks_its_owner_and_the_title() {
    let dir = TempDir::new();
    let server = server(&dir.store()).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let (_, thread) = run_to_end(&mut alice, "to rename", None).await;
    let path = format!("/v1/threads/{thread}");
    let missing = "/v1/threads/thr_01JD6QA0B1C2D3E4F5G6H7J8K9".to_owned();
    let long = format!(r#"{{"title": "{}"}}"#, "a".repeat(121));
    let cases: [(Option<&str>, &str, &str, u16, &str); 9] = [
        (
            Some("alice"),
            &path,
            r#"{"title": "  Trip plans "}"#,
            200,
            "Trip plans",
        ),
        (
            Some("bob"),
            &path,
            r#"{"title": "bob's"}"#,
            404,
            "thread_not_found",
        ),
        (
            Some("alice"),
            &missing,
            r#"{"title": "x"}"#,
            404,
            "thread_not_found",
        ),
        (
            Some("alice"),
            &path,
            r#"{"title": "   "}"#,
            400,
            "1 to 120 characters",
        ),
        (Some("alice"), &path, &long, 400, "1 to 120 characters"),
        (
            Some("alice"),
            &path,
            r#"{"title": "a\u0007b"}"#,
            400,
            "control characters",
        ),
        (
            Some("alice"),
            &path,
            r#"{"name": "x"}"#,
            400,
            "unknown field",
        ),
        (
            Some("alice"),
            &path,
            "not json",
            400,
            "parse the request body as JSON",
        ),
        (None, &path, r#"{"title": "x"}"#, 401, "unauthorized"),
    ];
    for (user, target, body, status, says) in cases {
        let (got, text) = http_sending(addr, "PATCH", target, user, body).await;
        assert_eq!(got, status, "{user:?} {body}: {text}");
        assert!(text.contains(says), "{user:?} {body}: {text} lacks {says}");
    }
    let (_, detail) = http(addr, "GET", &path, Some("alice")).await;
    assert_eq!(detail["title"], "Trip plans", "only alice's rename took");
    server.shutdown().await;
}
