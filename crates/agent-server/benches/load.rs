//! Server load benchmark: `cargo bench -p agent-server --bench load` (add `-- --quick` for a
//! short run).
//!
//! Starts the real `agent-server` binary as its own process, so its memory is measured alone,
//! then prints:
//! - resident memory per idle WebSocket connection (server RSS before and after opening
//!   2,000 authenticated connections of 200 users);
//! - delivery throughput: events per second that clients receive while 200 users run the
//!   synthetic agent at once (each run: 2 thinking steps, 3 tool calls, 5 answer chunks);
//! - delivery latency: the 50th and 99th percentile of (receive time - event timestamp).
//!
//! Figures are printed, never asserted.
#![allow(missing_docs, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "load-benchmark-secret-0123456789abcdef";

fn token(user: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn start_server() -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent-server"))
        .args(["serve", "--addr", "127.0.0.1:0", "--synthetic-agent"])
        .args([
            "--max-runs-per-user",
            "10",
            "--start-rate-per-minute",
            "100000",
        ])
        .env("AGENT_SERVER_JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the agent-server binary starts");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    // Keep draining the server's stdout so it never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the server prints its address")
        .to_owned();
    (child, addr)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: &str, user: &str) -> Socket {
    let url = format!("ws://{addr}/ws?token={}", token(user));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("connection_established"));
    ws
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cpu}, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (users, per_user, runs_per_user) = if quick { (50, 4, 2) } else { (200, 10, 5) };
    let (mut server, addr) = start_server();
    let pid = server.id();
    println!(
        "server load benchmark on {} (server and clients share the machine)",
        machine()
    );
    println!("{:<62} {:>14}", "measure", "figure");
    let row = |m: &str, f: String| println!("{m:<62} {f:>14}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    let mut sockets = Vec::new();
    for u in 0..users {
        for _ in 0..per_user {
            sockets.push((u, connect(&addr, &format!("bench{u:03}")).await));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let connections = sockets.len();
    row(
        &format!("server RSS before / after {connections} idle connections"),
        format!("{} / {} MiB", before / 1024, after / 1024),
    );
    row(
        "server RSS per idle connection",
        format!("{:.1} KiB", (after - before) as f64 / connections as f64),
    );

    // Throughput: the first connection of each user starts runs; every connection reads.
    let per_run = 1 + 2 + 6 + 5 + 1;
    let expected_per_socket = runs_per_user * per_run;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, (u, mut ws)) in sockets.into_iter().enumerate() {
        let starter = i % per_user == 0;
        tasks.push(tokio::spawn(async move {
            if starter {
                for r in 0..runs_per_user {
                    let frame = json!({"type": "start_agent", "request_id": format!("{u}-{r}"),
                        "payload": {"agent": "synthetic", "message": "load",
                                    "input": {"thinking": 2, "tools": 3, "chunks": 5, "sleep_ms": 1}}});
                    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
                }
            }
            let mut latencies = Vec::with_capacity(expected_per_socket);
            let mut events = 0;
            while events < expected_per_socket {
                let message = ws.next().await.unwrap().unwrap();
                let Message::Text(text) = message else { continue };
                let frame: Value = serde_json::from_str(&text).unwrap();
                let Some(stamp) = frame["timestamp"].as_str() else { continue };
                let sent = humantime::parse_rfc3339(stamp).unwrap();
                latencies.push(SystemTime::now().duration_since(sent).unwrap_or_default());
                events += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    row(
        &format!(
            "events delivered ({} runs of {users} users, {connections} sockets)",
            users * runs_per_user
        ),
        format!("{}", latencies.len()),
    );
    row(
        "delivered events/s",
        format!("{:.0}", latencies.len() as f64 / elapsed.as_secs_f64()),
    );
    row(
        "delivery latency p50 / p99 (emit -> client read)",
        format!(
            "{:.1} / {:.1} ms",
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3
        ),
    );
    row(
        "server RSS after the load",
        format!("{} MiB", rss_kib(pid) / 1024),
    );
    let _ = server.kill();
    let _ = server.wait();
}
