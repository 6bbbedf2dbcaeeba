//! What the server logs of an MCP server by default: one line that its tools are listed (a
//! change right after start is said as a change), nothing of its instructions (written for a
//! model, and long) nor the MCP library's own lines; at debug, the instructions, once.
//! Runs the reference "everything" server (`npm ci --prefix tests/mcp-servers`), which has
//! instructions and adds tools once it is initialized.

use std::time::Duration;

use mcp_tools::McpServer;

use crate::logs::Capture;
use crate::mcp::everything;

/// What launching the everything server and keeping it up for two seconds logs under
/// `filter`.
fn logs_of(filter: &str) -> String {
    let captured = Capture::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let server = McpServer::launch(everything(), Duration::from_secs(30)).await;
            assert!(!server.tools().is_empty(), "the everything server's tools");
            // Time for the notifications a server sends once it is initialized.
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(server);
        });
    });
    String::from_utf8(captured.0.lock().clone()).unwrap()
}

#[test]
fn an_mcp_servers_tools_are_said_once_and_its_instructions_only_at_debug() {
    let info = logs_of(server_telemetry::DEFAULT_FILTER);
    assert_eq!(
        info.matches("the server's tools are listed").count(),
        1,
        "{info}"
    );
    for absent in [
        "Service initialized",
        "instructions",
        "received notification",
        "DEBUG",
    ] {
        assert!(
            !info.contains(absent),
            "{absent:?} at the default level:\n{info}"
        );
    }
    let debug = logs_of("debug,rmcp=warn");
    let started: Vec<&str> = debug
        .lines()
        .filter(|l| l.contains("the server's session started"))
        .collect();
    assert_eq!(started.len(), 1, "{debug}");
    assert!(
        started[0].contains("instructions=") && started[0].contains("implementation="),
        "{}",
        started[0]
    );
}
