//! An MCP server's command starts clean: it gets a minimal environment (the few variables a
//! program needs to run) and what its configuration gives it (`--mcp-env`, `--mcp-pass-env`,
//! `--mcp-cwd`), never the agent-server's own environment and the secrets in it.
//!
//! The leak this closes is shown end to end: the reference "everything" server's `get-env`
//! tool answers its whole environment, and a model that calls it hands the answer to the
//! user (in `tool_completed`) and to itself (in its next request). The agent-server runs in a
//! child process (this test binary again, see `child_process`) whose environment holds its
//! JWT secret, its model's key and an unrelated secret, since no test changes the environment
//! of the process the other tests share.

use std::collections::BTreeSet;
use std::time::Duration;

use agent_server::config::{ServeArgs, ServerConfig};
use clap::{Args, Command, FromArgMatches};
use core_context::EventKind;
use mcp_tools::{INHERITED_VARIABLES, McpServer, McpServerSpec};
use serde_json::{Map, Value, json};

use crate::llm::{DONE, Model, Reply, content, tool_piece};
use crate::mcp::servers;
use crate::server_support::{Client, start_server};

/// The marker lines around the child's answer on its stdout (libtest prints there too).
const BEGIN: &str = "<<<child";
const END: &str = "child>>>";
/// The child's extra command line, one word a line; set only in the child.
const CHILD_ARGV: &str = "AGENT_IT_MCP_ENV_CHILD_ARGV";

/// The agent-server's secrets in the child's environment.
const JWT_SECRET: &str = "jwt-secret-of-the-server-0123456789abcdef";
const LLM_KEY: &str = "sk-llm-key-of-the-server-4711";
/// A secret of some other program that happens to be in the agent-server's environment.
const UNRELATED: &str = "unrelated-payments-secret-0815";
/// The value of the variable passed through with `--mcp-pass-env`.
const PASSED: &str = "passed-through-value-42";

/// The environment of a server's process, from a tool result (`{"text": "{...}"}`), where
/// the text is a JSON object with the environment at `pointer` (`""`: the whole object).
fn environment_in(result: &Value, pointer: &str) -> Map<String, Value> {
    let text = result["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{result}"));
    let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    parsed
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no environment at {pointer:?} in {text}"))
        .clone()
}

/// Every variable of `env` is an inherited one or one of `given`.
fn only_inherited_and(env: &Map<String, Value>, given: &[&str]) {
    let allowed: BTreeSet<&str> = INHERITED_VARIABLES.iter().chain(given).copied().collect();
    let extra: Vec<&String> = env
        .keys()
        .filter(|name| !allowed.contains(name.as_str()))
        .collect();
    assert!(extra.is_empty(), "variables beyond the minimum: {extra:?}");
}

/// Not a test of its own: the body of the child that the leak test starts (this binary
/// again, this test only). It serves the `llm` agent (a scripted model that calls the
/// everything server's `get-env`) with the MCP settings of its command line and environment,
/// runs it once, and prints the tool's result as the user got it and as the model got it.
/// Without [`CHILD_ARGV`] (a normal run) it has nothing to do.
#[test]
fn child_process() {
    let Ok(argv) = std::env::var(CHILD_ARGV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(run_get_env(argv.lines().collect()));
    println!("{BEGIN}\n{answer}\n{END}");
}

/// One run of the `llm` agent calling `mcp_everything_get-env`, configured by `argv` (and
/// this process's environment) as `agent-server serve` would be.
async fn run_get_env(argv: Vec<&str>) -> Value {
    let model = Model::start(vec![
        Reply::Stream(vec![
            tool_piece(0, Some("call_1"), Some("mcp_everything_get-env"), "{}"),
            DONE,
        ]),
        Reply::Stream(vec![content("done"), DONE]),
    ])
    .await;
    let base = format!("http://{}/v1", model.addr);
    let argv = [
        "serve",
        "--llm-base-url",
        &base,
        "--llm-model",
        "test-model",
    ]
    .into_iter()
    .chain(argv);
    let matches = ServeArgs::augment_args(Command::new("serve"))
        .try_get_matches_from(argv)
        .unwrap();
    let args = ServeArgs::from_arg_matches(&matches).unwrap();
    let configured = ServerConfig::from_args(args).unwrap();
    assert!(
        configured.llm.as_ref().unwrap().api_key.is_some(),
        "the model's key is read from LLM_API_KEY"
    );
    let server = start_server(move |c| {
        c.mcp_servers = configured.mcp_servers;
        c.llm = configured.llm;
    })
    .await;
    let mut alice = Client::user(server.addr(), "alice").await;
    alice.start("r1", "llm", json!({})).await;
    let events = alice.events_until_terminals(1).await;
    let completed = events
        .iter()
        .find_map(|e| match &e.event.kind {
            EventKind::ToolCompleted {
                is_error, result, ..
            } => Some(json!({"is_error": is_error, "result": result})),
            _ => None,
        })
        .expect("a tool_completed event");
    let requests = model.requests();
    let to_model = requests[1].1["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .map(|m| m["content"].clone())
        .expect("the tool's message to the model");
    server.shutdown().await;
    json!({"tool_completed": completed, "to_model": to_model})
}

#[test]
fn no_secret_of_the_agent_server_reaches_an_mcp_servers_environment() {
    let everything =
        servers().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let argv = [
        "--mcp-server".to_owned(),
        format!("everything=node '{}' stdio", everything.display()),
        "--mcp-env".to_owned(),
        "everything:GIVEN_VAR=given-value".to_owned(),
    ];
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "mcp_env::child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        // A small environment, so that the whole of it fits in a tool result uncut (the
        // dispatcher cuts long strings): were it inherited, every secret would show.
        .env_clear()
        .envs(["PATH", "HOME"].map(|name| (name, std::env::var(name).unwrap())))
        .env("AGENT_SERVER_JWT_SECRET", JWT_SECRET)
        .env("LLM_API_KEY", LLM_KEY)
        .env("PAYMENTS_SECRET_KEY", UNRELATED)
        .env("SOME_PASSED_VAR", PASSED)
        .env("AGENT_SERVER_MCP_PASS_ENV", "everything:SOME_PASSED_VAR")
        .env(CHILD_ARGV, argv.join("\n"));
    let output = child.output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed: {stdout}\n{stderr}");
    let start = stdout.find(BEGIN).expect("the child answers") + BEGIN.len() + 1;
    let end = stdout.find(END).expect("the child ends its answer");
    let answer: Value = serde_json::from_str(&stdout[start..end]).unwrap();

    let completed = &answer["tool_completed"];
    assert_eq!(completed["is_error"], false, "{completed}");
    let to_model: Value = serde_json::from_str(answer["to_model"].as_str().unwrap()).unwrap();
    for (seen_by, result) in [("the user", &completed["result"]), ("the model", &to_model)] {
        let shown = result.to_string();
        for secret in [JWT_SECRET, LLM_KEY, UNRELATED] {
            assert!(!shown.contains(secret), "{seen_by} got {secret}: {shown}");
        }
        let env = environment_in(result, "");
        let var = |name: &str| env.get(name).and_then(Value::as_str);
        assert_eq!(var("GIVEN_VAR"), Some("given-value"), "{seen_by}: {shown}");
        assert_eq!(var("SOME_PASSED_VAR"), Some(PASSED), "{seen_by}: {shown}");
        assert_eq!(var("PATH"), std::env::var("PATH").ok().as_deref());
        only_inherited_and(&env, &["GIVEN_VAR", "SOME_PASSED_VAR"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_runs_in_its_working_directory_with_its_given_environment() {
    let dir = std::env::temp_dir().join(format!(
        "agent-it-mcp-cwd-{}",
        core_context::RunId::generate()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let script = servers().join("scripted.mjs");
    let mut spec = McpServerSpec::parse(&format!("scripted=node '{}'", script.display())).unwrap();
    spec.set_cwd(&dir).unwrap();
    spec.set_env("GIVEN_VAR", "given = value; with spaces")
        .unwrap();
    // Overrides the inherited one.
    spec.set_env("TZ", "Pacific/Auckland").unwrap();
    let server = McpServer::launch(spec, Duration::from_secs(20)).await;
    let tool = server
        .tool("mcp_scripted_environment")
        .expect("the scripted server's environment tool");
    use agent_registry::Tool;
    let said = tool
        .call(&crate::support::context("alice"), json!({}))
        .await
        .unwrap();
    let text = said["text"].as_str().unwrap();
    let answer: Value = serde_json::from_str(text).unwrap();
    let cwd = std::fs::canonicalize(&dir).unwrap();
    assert_eq!(answer["cwd"], cwd.to_str().unwrap(), "{text}");
    let env = environment_in(&said, "/env");
    assert_eq!(env["GIVEN_VAR"], "given = value; with spaces");
    assert_eq!(env["TZ"], "Pacific/Auckland");
    assert_eq!(
        env.get("PATH").and_then(Value::as_str),
        std::env::var("PATH").ok().as_deref()
    );
    only_inherited_and(&env, &["GIVEN_VAR"]);
    // This process's other variables (cargo's, the CI's) stay out.
    let ours = std::env::vars()
        .map(|(name, _)| name)
        .find(|name| !INHERITED_VARIABLES.contains(&name.as_str()))
        .expect("the test process has a variable beyond the minimum");
    assert!(!env.contains_key(&ours), "{ours} reached the server");
    std::fs::remove_dir_all(&dir).unwrap();
}
