//! What scrubbing costs: nanoseconds per text and throughput, for texts the size of typical
//! events, with the secrets a server typically has (JWT secret, model key, two MCP keys, a
//! store password). Prints a table; `cargo bench -p secrets` runs it.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use secrets::{Scrubber, Secrets, Site, StreamScrub};

fn main() {
    let mut secrets = Secrets::new();
    for (source, value) in [
        (
            "AGENT_SERVER_JWT_SECRET",
            "c2VjcmV0LXRoYXQtaXMtbG9uZy1lbm91Z2gtZm9yLWhzMjU2",
        ),
        ("LLM_API_KEY", "sk-proj-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"),
        ("GITHUB_TOKEN", "ghp_0123456789abcdefghijABCDEFGHIJ0123"),
        ("SEARCH_KEY", "srch-a1b2c3d4e5f6a7b8"),
        ("--store password", "correct-horse-battery"),
    ] {
        secrets.add(source, value).unwrap();
    }
    let scrubber = Scrubber::new(&secrets);
    let chunk = r#"{"type":"agent_response_chunk","run_id":"run_01J","thread_id":"thr_01J","agent_name":"llm","timestamp":"2026-12-05T10:00:00.123456Z","data":{"delta":"The answer is 84, because 12 times 7 is 84."}}"#;
    let tool = format!(
        r#"{{"type":"tool_completed","data":{{"result":{{"text":"{}"}}}}}}"#,
        "HOME=/root\\nPATH=/usr/local/bin:/usr/bin\\nLANG=C.UTF-8\\n".repeat(40)
    );
    let large = "lorem ipsum dolor sit amet, ".repeat(2_300);
    println!(
        "scrubbing with {} secrets (all their encodings)",
        secrets.len()
    );
    println!(
        "{:<34} {:>9} {:>12} {:>10}",
        "text", "bytes", "ns per text", "MB/s"
    );
    for (name, text) in [
        ("event chunk (no secret)", chunk.to_owned()),
        ("tool result 2 KiB (no secret)", tool.clone()),
        ("64 KiB text (no secret)", large.clone()),
        (
            "tool result 2 KiB (one secret)",
            tool.replace("LANG", "ghp_0123456789abcdefghijABCDEFGHIJ0123"),
        ),
    ] {
        let rounds = (20_000_000 / text.len().max(1)).clamp(200, 200_000);
        let started = Instant::now();
        for _ in 0..rounds {
            black_box(scrubber.scrub(Site::Events, black_box(&text)));
        }
        let elapsed = started.elapsed();
        let ns = elapsed.as_nanos() as f64 / rounds as f64;
        let mbps = text.len() as f64 * rounds as f64 / elapsed.as_secs_f64() / 1e6;
        println!("{name:<34} {:>9} {ns:>12.0} {mbps:>10.0}", text.len());
    }
    let deltas: Vec<String> = "The answer is 84, because 12 times 7 is 84. "
        .repeat(20)
        .split_inclusive(' ')
        .map(str::to_owned)
        .collect();
    let rounds = 2_000;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut stream = StreamScrub::new();
        for delta in &deltas {
            black_box(stream.push(&scrubber, Site::Events, delta));
        }
        black_box(stream.finish(&scrubber, Site::Events));
    }
    let per_delta = started.elapsed().as_nanos() as f64 / (rounds * deltas.len()) as f64;
    println!(
        "{:<34} {:>9} {per_delta:>12.0}",
        "streamed answer, per word delta", ""
    );
}
