//! `POST /agui/{agent}` over real HTTP: the token first, then the `RunAgentInput` checked
//! with a reason for each refusal; a run's AG-UI events in order, the same run live on the
//! user's socket (and on no one else's); closing the request cancels the run; the client's
//! thread id is the run's thread when it is a valid id here, and only its owner's.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::history_server::http_text;
use crate::server_support::{Client, start_server, token};

/// A `RunAgentInput` asking `message`, with the agent's options in `forwardedProps`.
pub(crate) fn run_input(thread: &str, message: &str, options: Value) -> Value {
    json!({"threadId": thread, "runId": "client-run-1", "state": {}, "tools": [], "context": [],
           "messages": [{"id": "m1", "role": "user", "content": message}],
           "forwardedProps": options})
}

pub(crate) async fn post(
    addr: SocketAddr,
    agent: &str,
    user: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut request = crate::support::http_client()
        .post(format!("http://{addr}/agui/{agent}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(user) = user {
        request = request.bearer_auth(token(user));
    }
    request.send().await.unwrap()
}

/// Reads server-sent events until the stream ends (or `until` says stop); their data as JSON.
pub(crate) async fn events(
    response: &mut reqwest::Response,
    until: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    events_with_ids(response, until)
        .await
        .into_iter()
        .map(|(_, event)| event)
        .collect()
}

/// [`events`], each with its `id:` (if it has one).
pub(crate) async fn events_with_ids(
    response: &mut reqwest::Response,
    until: impl Fn(&[Value]) -> bool,
) -> Vec<(Option<String>, Value)> {
    let mut buffer = String::new();
    let mut out: Vec<(Option<String>, Value)> = Vec::new();
    let mut seen: Vec<Value> = Vec::new();
    while !until(&seen) {
        let chunk = tokio::time::timeout(Duration::from_secs(15), response.chunk())
            .await
            .expect("an event within 15 s")
            .unwrap();
        let Some(chunk) = chunk else { break };
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let id = block
                .lines()
                .find_map(|line| line.strip_prefix("id: "))
                .map(str::to_owned);
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    let event: Value = serde_json::from_str(data).unwrap();
                    seen.push(event.clone());
                    out.push((id.clone(), event));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agui_runs_need_a_token_and_a_valid_input() {
    let server = start_server(|c| c.synthetic_agent = true).await;
    let addr = server.addr();
    let good = run_input("t-1", "hi", json!({})).to_string();
    let user_last = json!({"threadId": "t", "runId": "r", "messages": [
        {"id": "1", "role": "user", "content": "hi"}, {"id": "2", "role": "assistant", "content": "hello"}]});
    let image = json!({"threadId": "t", "runId": "r", "messages": [
        {"id": "1", "role": "user", "content": [{"type": "image", "source": {"type": "url", "value": "x"}}]}]});
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        ("synthetic", None, good.clone(), 401, "no token"),
        (
            "synthetic",
            Some("alice"),
            "{oops".into(),
            400,
            "not a RunAgentInput",
        ),
        (
            "synthetic",
            Some("alice"),
            "[]".into(),
            400,
            "a JSON object",
        ),
        (
            "synthetic",
            Some("alice"),
            json!({"runId": "r", "messages": []}).to_string(),
            400,
            "`threadId` is missing",
        ),
        (
            "synthetic",
            Some("alice"),
            json!({"threadId": 7, "runId": "r", "messages": []}).to_string(),
            400,
            "`threadId` must be a string",
        ),
        (
            "synthetic",
            Some("alice"),
            json!({"threadId": "t", "runId": "r", "messages": []}).to_string(),
            400,
            "`messages` is empty",
        ),
        (
            "synthetic",
            Some("alice"),
            user_last.to_string(),
            400,
            "must have role \\\"user\\\"",
        ),
        (
            "synthetic",
            Some("alice"),
            image.to_string(),
            400,
            "has a image part",
        ),
        (
            "synthetic",
            Some("alice"),
            run_input("t", "   ", json!({})).to_string(),
            400,
            "the user's message is empty",
        ),
        (
            "synthetic",
            Some("alice"),
            run_input("t", "hi", json!([1])).to_string(),
            400,
            "`forwardedProps` must be an object",
        ),
        ("nobody", Some("alice"), good.clone(), 404, "unknown_agent"),
    ];
    for (agent, user, body, status, says) in cases {
        let response = post(addr, agent, user, &body).await;
        let got = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(got, status, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text} lacks {says}");
    }
    // A body that does not say it is JSON: 415, with its own code.
    let response = crate::support::http_client()
        .post(format!("http://{addr}/agui/synthetic"))
        .bearer_auth(crate::server_support::token("alice"))
        .header("content-type", "text/plain")
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let refusal: serde_json::Value = response.json().await.unwrap();
    assert_eq!(refusal["error"], "unsupported_media_type", "{refusal}");
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("application/json"),
        "{refusal}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agui_run_streams_its_events_and_shows_on_the_users_socket_only() {
    let server = start_server(|c| c.synthetic_agent = true).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let mut bob = Client::user(addr, "bob").await;
    let options = json!({"thinking": 1, "tools": 1, "chunks": 2, "rawEvent": true});
    let mut response = post(
        addr,
        "synthetic",
        Some("alice"),
        &run_input("t-1", "hi", options).to_string(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let got = events(&mut response, |_| false).await;
    let types: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "RUN_STARTED",
            "CUSTOM",
            "REASONING_START",
            "REASONING_MESSAGE_START",
            "REASONING_MESSAGE_CONTENT",
            "REASONING_MESSAGE_END",
            "REASONING_END",
            "TOOL_CALL_START",
            "TOOL_CALL_ARGS",
            "TOOL_CALL_END",
            "TOOL_CALL_RESULT",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_FINISHED",
        ]
    );
    assert_eq!(
        (&got[0]["threadId"], &got[0]["runId"]),
        (&json!("t-1"), &json!("client-run-1"))
    );
    let run_id = got[1]["value"]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(got[15]["runId"], "client-run-1");
    // The same run, event for event, on alice's socket: same run id, same seqs.
    let socket = alice.events_until_terminals(1).await;
    let seqs: Vec<u64> = socket.iter().map(|e| e.seq).collect();
    assert!(socket.iter().all(|e| e.event.run_id.as_str() == run_id));
    let mut raw: Vec<u64> = got[2..]
        .iter()
        .map(|e| e["rawEvent"]["seq"].as_u64().unwrap())
        .collect();
    raw.dedup();
    let mapped: Vec<u64> = seqs.iter().copied().filter(|s| raw.contains(s)).collect();
    assert_eq!(
        raw, mapped,
        "the AG-UI events carry the socket's seqs, in order"
    );
    // Bob sees nothing of it.
    bob.pump(Duration::from_millis(200)).await;
    assert!(bob.pending.is_empty(), "bob got {:?}", bob.pending);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_request_cancels_the_run() {
    // After the grace a continuation of the response would have had (none comes).
    let server = start_server(|c| c.agui_reattach = Duration::from_secs(1)).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let options = json!({"thinking": 1, "tools": 0, "chunks": 0, "hang": true});
    let mut response = post(
        addr,
        "synthetic",
        Some("alice"),
        &run_input("t", "wait", options).to_string(),
    )
    .await;
    let got = events(&mut response, |e| {
        e.iter().any(|e| e["type"] == "REASONING_END")
    })
    .await;
    let run_id = got[1]["value"]["run_id"].as_str().unwrap().to_owned();
    drop(response);
    let ended = alice.events_until_terminals(1).await;
    let last = &ended.last().unwrap().event;
    assert_eq!(last.run_id.as_str(), run_id);
    assert_eq!(last.kind.type_name(), "agent_cancelled", "{last:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_thread_id_is_the_thread() {
    let server = start_server(|c| c.synthetic_agent = true).await;
    let addr = server.addr();
    // A thread id valid here (a UUID, say) is the thread: runs in it share it.
    for message in ["one", "two"] {
        let body = run_input("3f1c9a2e-agui-thread", message, json!({})).to_string();
        let mut response = post(addr, "synthetic", Some("alice"), &body).await;
        let got = events(&mut response, |_| false).await;
        assert_eq!(
            got[1]["value"]["thread_id"], "3f1c9a2e-agui-thread",
            "{message}"
        );
    }
    // Another user cannot run in it.
    let body = run_input("3f1c9a2e-agui-thread", "three", json!({})).to_string();
    let theirs = post(addr, "synthetic", Some("bob"), &body).await;
    assert_eq!(theirs.status(), 404);
    assert!(theirs.text().await.unwrap().contains("thread_not_found"));
    // One that is not (a space in it) gets a new thread of the server's.
    let body = run_input("not an id", "four", json!({})).to_string();
    let mut response = post(addr, "synthetic", Some("alice"), &body).await;
    let got = events(&mut response, |_| false).await;
    assert!(
        got[1]["value"]["thread_id"]
            .as_str()
            .unwrap()
            .starts_with("thr_")
    );
    assert_eq!(
        got[0]["threadId"], "not an id",
        "the client's ids are echoed"
    );
    server.shutdown().await;
}

/// A de-chunked HTTP/1.1 response body (`Transfer-Encoding: chunked`).
fn dechunk(mut raw: &str) -> String {
    let mut body = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        body.push_str(&rest[..size]);
        raw = rest[size..].trim_start_matches("\r\n");
    }
    body
}

/// Bounded like a socket: the body size (413), the user's runs (429), and a reader too slow
/// for its queue (`RUN_ERROR slow_consumer`, and the run is cancelled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agui_runs_are_bounded_like_socket_runs() {
    let server = start_server(|c| {
        c.synthetic_agent = true;
        c.engine.max_concurrent_runs = 1;
        c.engine.max_queued_runs = 0;
        c.bridge.send_queue_events = 16;
        c.agui_reattach = Duration::from_secs(1);
    })
    .await;
    let addr = server.addr();
    let huge = run_input("t", &"x".repeat(2 * 1024 * 1024), json!({})).to_string();
    let response = post(addr, "synthetic", Some("alice"), &huge).await;
    assert_eq!(response.status(), 413);
    assert!(response.text().await.unwrap().contains("bad_request"));

    let mut alice = Client::user(addr, "alice").await;
    let hang = json!({"thinking": 1, "tools": 0, "chunks": 0, "hang": true});
    let mut first = post(
        addr,
        "synthetic",
        Some("alice"),
        &run_input("t", "one", hang).to_string(),
    )
    .await;
    events(&mut first, |e| {
        e.iter().any(|e| e["type"] == "REASONING_END")
    })
    .await;
    let second = post(
        addr,
        "synthetic",
        Some("alice"),
        &run_input("t2", "two", json!({})).to_string(),
    )
    .await;
    assert_eq!(second.status(), 429);
    assert!(second.text().await.unwrap().contains("too_many_runs"));
    drop(first);
    alice.events_until_terminals(1).await;
    drop(alice);

    // A reader that reads nothing, with a small receive window: the run's 3,000 events
    // overflow its queue of 16. A raw socket, not an HTTP client: the point is a reader whose
    // receive buffer is 4 KiB and who does not read, which no client library offers.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let body = run_input(
        "t3",
        "flood",
        json!({"thinking": 1000, "tools": 1000, "chunks": 1000}),
    )
    .to_string();
    let request = format!(
        "POST /agui/synthetic HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        token("alice"),
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    // The server counts the slow consumer; alice's own socket (queue of 16 too) is not read
    // here, so the figure comes from the metrics.
    let mut counted = false;
    for _ in 0..300 {
        let (_, text) = http_text(addr, "GET", "/metrics", None).await;
        if text
            .lines()
            .any(|l| l.contains("slow_consumer_disconnects_total") && l.ends_with(" 1"))
        {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counted, "no slow consumer counted");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut raw))
        .await
        .expect("the response ends")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    let last = dechunk(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .map(|l| serde_json::from_str::<Value>(l).unwrap());
    let last = last.expect("events before the end");
    assert_eq!(
        (&last["type"], &last["code"]),
        (&json!("RUN_ERROR"), &json!("slow_consumer")),
        "{last}"
    );
    server.shutdown().await;
}
