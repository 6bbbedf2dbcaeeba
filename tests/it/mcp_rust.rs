//! A Rust MCP server written with `rmcp`, served by the test over streamable HTTP (axum), as
//! agent-server's `--mcp-server NAME=http://…`: its tool is listed and the `llm` agent calls it
//! through the dispatcher, arguments in and result out. Behind a bearer token, the server is
//! reached with the token it is given, and refused with the reason without one.

use std::sync::Arc;

use agent_registry::ToolSet;
use axum::response::IntoResponse;

use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};

use core_context::EventKind;
use llm_agent::LlmConfig;
use mcp_tools::{McpServerSpec, McpTools};

use crate::history_server::http;
use crate::llm::{DONE, Model, Reply, content, tool_piece};
use crate::server_support::{Client, start_server};

/// One tool: `add` adds `a` and `b`.
#[derive(Clone)]
struct Adder;

impl ServerHandler for Adder {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let Value::Object(schema) = json!({"type": "object", "required": ["a", "b"],
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}}})
        else {
            unreachable!("an object")
        };
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "add",
            "Adds a and b.",
            Arc::new(schema),
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let number = |key: &str| args.get(key).and_then(Value::as_f64);
        let (Some(a), Some(b)) = (number("a"), number("b")) else {
            return Ok(
                CallToolResult::error(vec![ContentBlock::text("a and b must be numbers")]).into(),
            );
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(format!("{}", a + b))]).into())
    }
}

/// Serves [`Adder`] at `http://127.0.0.1:PORT/mcp`; its URL.
async fn serve_adder() -> String {
    serve_adder_behind(None).await
}

/// Serves [`Adder`], answering 401 to a request without `Authorization: Bearer TOKEN` when
/// `token` is given; its URL.
async fn serve_adder_behind(token: Option<&'static str>) -> String {
    let service = StreamableHttpService::new(
        || Ok(Adder),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let check = move |request: axum::extract::Request, next: axum::middleware::Next| async move {
        let sent = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match token {
            Some(token) if sent != Some(&format!("Bearer {token}")) => {
                axum::http::StatusCode::UNAUTHORIZED.into_response()
            }
            _ => next.run(request).await,
        }
    };
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(check));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/mcp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_mcp_server_over_http_lends_its_tool_to_the_llm_agent() {
    let url = serve_adder().await;
    let model = Model::start(vec![
        Reply::Stream(vec![
            tool_piece(
                0,
                Some("call_1"),
                Some("mcp_rusty_add"),
                r#"{"a": 2, "b": 40}"#,
            ),
            DONE,
        ]),
        Reply::Stream(vec![content("42"), DONE]),
    ])
    .await;
    let base = format!("http://{}/v1", model.addr);
    let spec = McpServerSpec::parse(&format!("rusty={url}")).unwrap();
    let server = start_server(move |c| {
        c.mcp_servers = vec![spec];
        c.llm = Some(LlmConfig::new(base, "test-model"));
    })
    .await;
    let (_, tools) = http(server.addr(), "GET", "/tools", None).await;
    let add = tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "mcp_rusty_add")
        .cloned();
    let add = add.expect("the Rust server's add");
    assert_eq!(
        (&add["source"], &add["description"]),
        (&json!("mcp:rusty"), &json!("Adds a and b."))
    );

    let mut alice = Client::user(server.addr(), "alice").await;
    alice.start("r1", "llm", json!({})).await;
    let events = alice.events_until_terminals(1).await;
    let (arguments, result) =
        events
            .iter()
            .fold((None, None), |(args, result), e| match &e.event.kind {
                EventKind::ToolExecuting { arguments, .. } => (Some(arguments.clone()), result),
                EventKind::ToolCompleted {
                    result: r,
                    is_error,
                    ..
                } => {
                    assert!(!is_error, "{r}");
                    (args, Some(r.clone()))
                }
                _ => (args, result),
            });
    assert_eq!(arguments.unwrap(), json!({"a": 2, "b": 40}));
    assert_eq!(result.unwrap()["text"], "42");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_behind_a_bearer_token_is_reached_with_it_and_refused_without() {
    let url = serve_adder_behind(Some("s3cret-token")).await;
    let ctx = crate::support::context("alice");
    let spec = McpServerSpec::parse(&format!("rusty={url}")).unwrap();
    let variable = mcp_tools::token_variable("rusty");

    let with =
        McpTools::start(&[spec.clone().with_token(&variable, "s3cret-token").unwrap()]).await;
    let names: Vec<String> = with.tools().iter().map(|t| t.name().to_owned()).collect();
    assert_eq!(names, ["mcp_rusty_add"]);
    let add = with.tool("mcp_rusty_add").unwrap();
    let sum = add.call(&ctx, json!({"a": 1, "b": 2})).await.unwrap();
    assert_eq!(sum["text"], "3");

    for (token, case) in [(None, "no token"), (Some("wrong"), "a wrong token")] {
        let spec = match token {
            Some(token) => spec.clone().with_token(&variable, token).unwrap(),
            None => spec.clone(),
        };
        let without = McpTools::start(&[spec]).await;
        assert!(without.tools().is_empty(), "{case}");
        let refused = without.tool("mcp_rusty_add").unwrap();
        let error = refused
            .call(&ctx, json!({"a": 1, "b": 2}))
            .await
            .unwrap_err();
        let said = error.to_string();
        assert!(
            said.contains("the MCP server rusty has not started") && said.contains("401"),
            "{case}: {said}"
        );
    }
}
