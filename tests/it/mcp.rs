//! Tools from MCP servers, with real third-party servers run by node from `tests/mcp-servers`
//! (`npm ci --prefix tests/mcp-servers`; `.ci/run` does): the reference "everything" server
//! and a small one on the official SDK whose tools a test controls. Their tools are listed at
//! `GET /tools` and called by the `llm` agent (a scripted OpenAI-compatible model) through the
//! dispatcher; a hanging tool times out; a cancelled run cancels its call on the server; a server that dies mid-call fails that call and is
//! started again in the background after its backoff, as is one that hangs (found by its ping);
//! a server that fails at start answers its calls with the reason, is tried again, and lends
//! its tools once up; a server whose tools change says so and they are listed again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use core_context::EventKind;
use llm_agent::LlmConfig;
use mcp_tools::{McpServer, McpServerSpec};
use serde_json::{Value, json};

use crate::history_server::{http, http_text};
use crate::llm::{DONE, Model, Reply, content, tool_piece};
use crate::server_support::{Client, start_server};

pub(crate) fn servers() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp-servers");
    assert!(
        dir.join("node_modules/@modelcontextprotocol/server-everything")
            .exists(),
        "the MCP test servers are not installed: npm ci --prefix tests/mcp-servers (.ci/run does)"
    );
    dir
}

pub(crate) fn everything() -> McpServerSpec {
    let path = servers().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    McpServerSpec::parse(&format!("everything=node '{}' stdio", path.display())).unwrap()
}

pub(crate) fn scripted() -> McpServerSpec {
    let path = servers().join("scripted.mjs");
    McpServerSpec::parse(&format!("scripted=node '{}'", path.display())).unwrap()
}

/// The scripted server named `late`, which fails at start until `marker` exists.
fn late(marker: &Path) -> McpServerSpec {
    let path = servers().join("scripted.mjs");
    let spec = format!(
        "late=node '{}' --wait-for '{}'",
        path.display(),
        marker.display()
    );
    McpServerSpec::parse(&spec).unwrap()
}

/// Waits (up to `seconds`) until `check` holds.
async fn eventually<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..seconds * 10 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within {seconds} s");
}

/// A model that calls `tool` with `args` once, then answers "done".
async fn model_calling(tool: &str, args: Value) -> Model {
    Model::start(vec![
        Reply::Stream(vec![
            tool_piece(0, Some("call_1"), Some(tool), &args.to_string()),
            DONE,
        ]),
        Reply::Stream(vec![content("done"), DONE]),
    ])
    .await
}

/// The `tool_completed` of a run of `alice`'s: (is_error, result).
async fn tool_result(client: &mut Client) -> (bool, Value) {
    let events = client.events_until_terminals(1).await;
    events
        .iter()
        .find_map(|e| match &e.event.kind {
            EventKind::ToolCompleted {
                is_error, result, ..
            } => Some((*is_error, result.clone())),
            _ => None,
        })
        .expect("a tool_completed event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_are_listed_and_called_by_the_llm_agent() {
    let model = model_calling(
        "mcp_everything_echo",
        json!({"message": "hi from the model"}),
    )
    .await;
    let base = format!("http://{}/v1", model.addr);
    let server = start_server(move |c| {
        c.mcp_servers = vec![everything(), scripted()];
        c.llm = Some(LlmConfig::new(base, "test-model"));
    })
    .await;
    let addr = server.addr();
    let (_, tools) = http(addr, "GET", "/tools", None).await;
    let listed = |name: &str| {
        tools
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
    };
    let echo = listed("mcp_everything_echo").expect("the everything server's echo");
    assert_eq!(echo["source"], "mcp:everything");
    assert!(
        echo["parameters"]["properties"]["message"].is_object(),
        "{echo}"
    );
    for name in [
        "mcp_everything_get-sum",
        "mcp_scripted_pid",
        "mcp_scripted_sleep",
        "mcp_scripted_crash",
    ] {
        assert!(listed(name).is_some(), "no {name}");
    }
    assert_eq!(listed("calculator").unwrap()["source"], "built-in");

    let mut alice = Client::user(addr, "alice").await;
    alice.start("r1", "llm", json!({})).await;
    let (is_error, result) = tool_result(&mut alice).await;
    assert!(!is_error, "{result}");
    assert!(
        result["text"]
            .as_str()
            .unwrap()
            .contains("hi from the model"),
        "{result}"
    );
    // The model got the result back as the tool's message.
    let requests = model.requests();
    let second = &requests[1].1["messages"];
    let tool_message = second
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert!(
        tool_message["content"]
            .as_str()
            .unwrap()
            .contains("hi from the model")
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_mcp_tool_times_out_through_the_dispatcher() {
    let model = model_calling("mcp_scripted_sleep", json!({"ms": 60_000})).await;
    let base = format!("http://{}/v1", model.addr);
    let server = start_server(move |c| {
        c.mcp_servers = vec![scripted()];
        c.llm = Some(LlmConfig::new(base, "test-model"));
        c.engine.dispatch.default_tool_timeout = Duration::from_secs(1);
    })
    .await;
    let mut alice = Client::user(server.addr(), "alice").await;
    alice.start("r1", "llm", json!({})).await;
    let (is_error, result) = tool_result(&mut alice).await;
    assert!(is_error);
    assert_eq!(result["code"], "timeout", "{result}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_cancels_its_call_on_the_mcp_server() {
    let call = |id: &str, tool: &str, args: &str| {
        Reply::Stream(vec![tool_piece(0, Some(id), Some(tool), args), DONE])
    };
    let started = std::env::temp_dir().join(format!(
        "agent-it-mcp-sleep-{}",
        core_context::RunId::generate()
    ));
    let sleep = json!({"ms": 60_000, "started": started}).to_string();
    let model = Model::start(vec![
        call("call_1", "mcp_scripted_sleep", &sleep),
        call("call_2", "mcp_scripted_cancelled", r#"{"at_least": 1}"#),
        Reply::Stream(vec![content("done"), DONE]),
    ])
    .await;
    let base = format!("http://{}/v1", model.addr);
    let server = start_server(move |c| {
        c.mcp_servers = vec![scripted()];
        c.llm = Some(LlmConfig::new(base, "test-model"));
    })
    .await;
    let mut alice = Client::user(server.addr(), "alice").await;
    let accepted = alice.start("r1", "llm", json!({})).await;
    // Cancelled once the server runs the call.
    eventually(20, "the sleep started on the server", || async {
        started.exists()
    })
    .await;
    let run_id = accepted["run_id"].clone();
    alice
        .send(json!({"type": "cancel_run", "payload": {"run_id": run_id}}))
        .await;
    let (is_error, result) = tool_result(&mut alice).await;
    // The run ended while its tool ran: the call was dropped and its event closed.
    assert!(is_error);
    assert_eq!(result["code"], "abandoned", "{result}");
    // The server was told (its notice may trail the run's end by a moment): its sleep
    // stopped early, and it counts such calls.
    alice.start("r2", "llm", json!({})).await;
    let (is_error, result) = tool_result(&mut alice).await;
    assert!(!is_error, "{result}");
    assert_eq!(result["text"], "1", "{result}");
    server.shutdown().await;
    std::fs::remove_file(&started).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_mid_call_fails_that_call_and_is_started_again() {
    let server = McpServer::launch(scripted(), Duration::from_secs(20)).await;
    let tool = |name: &str| server.tool(&format!("mcp_scripted_{name}")).unwrap();
    let ctx = crate::support::context("alice");
    use agent_registry::Tool;
    let pid = |value: Value| value["text"].as_str().unwrap().to_owned();
    let first = pid(tool("pid").call(&ctx, json!({})).await.unwrap());

    let crashed = tool("crash").call(&ctx, json!({})).await.unwrap_err();
    assert!(
        crashed.to_string().contains("stopped during the call"),
        "{crashed}"
    );
    // Right after, it is restarting (its backoff has not passed): said, not hung.
    let waiting = tool("pid").call(&ctx, json!({})).await.unwrap_err();
    assert!(waiting.to_string().contains("being restarted"), "{waiting}");
    // After the backoff it is started again in the background, with no call needed: then
    // calls work, served by another process.
    let mut up = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if server.status().up {
            up = true;
            break;
        }
    }
    assert!(up, "the server started again within 10 s");
    let again = pid(tool("pid").call(&ctx, json!({})).await.unwrap());
    assert_ne!(first, again, "a new process");

    // Killed while idle: noticed and started again with no call at all.
    let status = std::process::Command::new("kill")
        .args(["-9", &again])
        .status()
        .unwrap();
    assert!(status.success());
    // Down, then up again, watched with no call in between.
    for want in [false, true] {
        let mut reached = false;
        for _ in 0..150 {
            if server.status().up == want {
                reached = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(reached, "the server was never up == {want} within 15 s");
    }
    let third = pid(tool("pid").call(&ctx, json!({})).await.unwrap());
    assert_ne!(third, again, "a new process after the kill");
}

/// The "everything" server running on its own over streamable HTTP, on a free port; killed
/// when dropped.
pub(crate) struct HttpEverything {
    child: std::process::Child,
    pub(crate) url: String,
}

impl Drop for HttpEverything {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn http_everything() -> HttpEverything {
    // It listens on every address of a port picked free a moment before; a process of
    // another test may have taken that port on 127.0.0.1 meanwhile (a Redis answering HTTP
    // with an error, seen in CI as the TLS front's 502), so the port is checked to be its.
    for _ in 0..5 {
        let server = http_everything_once();
        if answers_http(&server.url) {
            return server;
        }
    }
    panic!("the HTTP server's port was taken by another process five times");
}

fn http_everything_once() -> HttpEverything {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = servers().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let mut child = std::process::Command::new("node")
        .arg(path)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("node runs");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let listening = lines
        .by_ref()
        .take(50)
        .map_while(Result::ok)
        .any(|l| l.contains("listening on port"));
    assert!(listening, "the HTTP server did not start");
    std::thread::spawn(move || for _ in lines {});
    HttpEverything {
        child,
        url: format!("http://127.0.0.1:{port}/mcp"),
    }
}

/// Whether what answers at `url` (`http://127.0.0.1:PORT/...`) speaks HTTP.
fn answers_http(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some(port) = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.split('/').next())
    else {
        return false;
    };
    let Ok(mut stream) = std::net::TcpStream::connect(format!("127.0.0.1:{port}")) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0_u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_over_streamable_http_lends_its_tools() {
    let remote = http_everything();
    let spec = McpServerSpec::parse(&format!("web={}", remote.url)).unwrap();
    let server = start_server(move |c| c.mcp_servers = vec![spec]).await;
    let (_, tools) = http(server.addr(), "GET", "/tools", None).await;
    let echo = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "mcp_web_echo")
        .cloned()
        .expect("the HTTP server's echo");
    assert_eq!(echo["source"], "mcp:web");
    server.shutdown().await;

    let web = McpServer::launch(
        McpServerSpec::parse(&format!("web={}", remote.url)).unwrap(),
        Duration::from_secs(20),
    )
    .await;
    let echo = web.tool("mcp_web_echo").expect("the HTTP server's echo");
    use agent_registry::Tool;
    let ctx = crate::support::context("alice");
    let said = echo
        .call(&ctx, json!({"message": "over http"}))
        .await
        .unwrap();
    assert!(
        said["text"].as_str().unwrap().contains("over http"),
        "{said}"
    );
    // The server goes away: the call fails with a tool error, it does not hang.
    drop(remote);
    let failed = echo
        .call(&ctx, json!({"message": "anyone?"}))
        .await
        .unwrap_err();
    assert!(failed.to_string().contains("MCP server web"), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_fails_at_start_is_tried_again_and_lends_its_tools_once_up() {
    let dir =
        std::env::temp_dir().join(format!("agent-it-mcp-{}", core_context::RunId::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("ready");
    // Two runs, each calling the late server's pid tool once.
    let call = || {
        [
            Reply::Stream(vec![
                tool_piece(0, Some("call_1"), Some("mcp_late_pid"), "{}"),
                DONE,
            ]),
            Reply::Stream(vec![content("done"), DONE]),
        ]
    };
    let model = Model::start(call().into_iter().chain(call()).collect()).await;
    let base = format!("http://{}/v1", model.addr);
    let spec = late(&marker);
    let server = start_server(move |c| {
        c.mcp_servers = vec![spec];
        c.llm = Some(LlmConfig::new(base, "test-model"));
    })
    .await;
    let addr = server.addr();
    let late_tools = || async move {
        let (_, tools) = http(addr, "GET", "/tools", None).await;
        let names: Vec<String> = tools
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .filter(|n| n.starts_with("mcp_late_"))
            .collect();
        names
    };
    // Down: no tools listed, the node ready (the server's state shown, not deciding).
    assert!(late_tools().await.is_empty());
    let metric = |name: &'static str| async move {
        let (_, text) = http_text(addr, "GET", "/metrics", None).await;
        let prefix = format!("agent_server_{name}{{server=\"late\"}} ");
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned));
        line.unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert_eq!(metric("mcp_server_up").await, "0");
    assert_eq!(metric("mcp_server_tools").await, "0");
    assert!(
        metric("mcp_server_failures_total")
            .await
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let (status, ready) = http(addr, "GET", "/readyz", None).await;
    assert_eq!(
        (status, &ready["checks"]["mcp"]["late"]),
        (200, &json!("failing")),
        "{ready}"
    );

    // A call of its tool meanwhile is a clear tool error, not "no such tool".
    let mut alice = Client::user(addr, "alice").await;
    alice.start("r1", "llm", json!({})).await;
    let (is_error, result) = tool_result(&mut alice).await;
    assert!(is_error, "{result}");
    let said = result["error"].as_str().unwrap_or_default();
    assert!(
        said.contains("the MCP server late has not started")
            && said.contains("does not exist yet")
            && said.contains("tried again"),
        "{result}"
    );

    // Its dependency comes up: at its next try it starts, and its tools are listed.
    std::fs::write(&marker, b"").unwrap();
    eventually(60, "the late server's tools listed", || async {
        late_tools().await.contains(&"mcp_late_pid".to_owned())
    })
    .await;
    let (_, ready) = http(addr, "GET", "/readyz", None).await;
    assert_eq!(ready["checks"]["mcp"]["late"], "ok", "{ready}");
    assert_eq!(metric("mcp_server_up").await, "1");
    assert_eq!(metric("mcp_server_tools").await, "9");
    alice.start("r2", "llm", json!({})).await;
    let (is_error, result) = tool_result(&mut alice).await;
    assert!(!is_error, "{result}");
    assert!(
        result["text"].as_str().unwrap().parse::<u32>().is_ok(),
        "{result}"
    );
    // The model was offered the tool once it was listed, not before.
    let offered = |request: &Value| {
        request["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["function"]["name"] == "mcp_late_pid")
    };
    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    assert!(!offered(&requests[0].1));
    assert!(offered(&requests[2].1));
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_tools_change_has_them_listed_again() {
    use agent_registry::Tool;
    let server = McpServer::launch(scripted(), Duration::from_secs(20)).await;
    assert!(server.tool("mcp_scripted_grown").is_none());
    let ctx = crate::support::context("alice");
    let grow = server.tool("mcp_scripted_grow").unwrap();
    grow.call(&ctx, json!({})).await.unwrap();
    eventually(10, "the grown tool listed", || async {
        server.tool("mcp_scripted_grown").is_some()
    })
    .await;
    let grown = server.tool("mcp_scripted_grown").unwrap();
    let said = grown.call(&ctx, json!({})).await.unwrap();
    assert_eq!(said["text"], "grown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hangs_is_found_by_its_ping_and_started_again() {
    use agent_registry::Tool;
    let server = McpServer::launch(scripted(), Duration::from_secs(20)).await;
    let ctx = crate::support::context("alice");
    let tool = |name: &str| server.tool(&format!("mcp_scripted_{name}")).unwrap();
    let pid = |value: Value| value["text"].as_str().unwrap().to_owned();
    let first = pid(tool("pid").call(&ctx, json!({})).await.unwrap());
    // The call hangs the server. While it waits (12 s: longer than a ping's interval and
    // timeout together) the server is left alone, busy as it may be: the call is not failed
    // by a restart, it runs out of its own time (as the dispatcher's timeout would end it).
    let freeze = tool("freeze");
    let frozen = tokio::time::timeout(Duration::from_secs(12), freeze.call(&ctx, json!({}))).await;
    assert!(frozen.is_err(), "the frozen call ended before its time");
    // Then, with no call waiting, the next ping goes unanswered: it is started again.
    let mut again = None;
    for _ in 0..60 {
        let pid_tool = tool("pid");
        let call = pid_tool.call(&ctx, json!({}));
        if let Ok(Ok(value)) = tokio::time::timeout(Duration::from_secs(1), call).await {
            again = Some(pid(value));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let again = again.expect("a new process answered within 90 s");
    assert_ne!(again, first, "a new process");
    // The hung one is stopped (MCP's stdio shutdown: its input closed, 3 s, SIGTERM, 3 s, kill).
    eventually(15, "the hung process ending", || async {
        let alive = std::process::Command::new("kill")
            .args(["-0", &first])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        !alive.success()
    })
    .await;
}
