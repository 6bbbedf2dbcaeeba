//! The local agents end to end, over a real socket, checked with the lifecycle checker, and
//! the assistant's help answer checked against the server's real command line.

use core_context::event::EventKind;
use core_context::lifecycle::check_lifecycle;
use serde_json::{Value, json};

use crate::server_support::{Client, events, start_server};

/// Starts `agent` on `message` and returns the run's events (sub-runs included).
pub(crate) async fn run(
    client: &mut Client,
    agent: &str,
    message: &str,
    runs: usize,
) -> (String, Vec<core_context::AgentEvent>) {
    client
        .send(json!({"type": "start_agent", "request_id": "r", "payload": {"agent": agent, "message": message}}))
        .await;
    let accepted = client.reply().await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    let frames = client.events_until_terminals(runs).await;
    (
        accepted["run_id"].as_str().unwrap().to_owned(),
        events(&frames),
    )
}

fn tool_results(events: &[core_context::AgentEvent]) -> Vec<(String, Value)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCompleted {
                tool_name,
                result,
                is_error: false,
                ..
            } => Some((tool_name.clone(), result.clone())),
            _ => None,
        })
        .collect()
}

pub(crate) fn answer(events: &[core_context::AgentEvent], run_id: &str) -> Value {
    events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            EventKind::AgentCompleted { result, .. } if e.run_id.as_str() == run_id => {
                Some(result.clone())
            }
            _ => None,
        })
        .expect("the run completed")
}

pub(crate) fn tools_called(events: &[core_context::AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolExecuting { tool_name, .. } => Some(tool_name.clone()),
            _ => None,
        })
        .collect()
}

fn streamed(events: &[core_context::AgentEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentResponseChunk { delta } => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

/// What the assistant should do with a message: the tools it calls (none when no rule fits)
/// and fragments its answer must hold.
type AssistantCase<'a> = (&'a str, &'a [&'a str], &'a [&'a str]);

/// How every help answer (no rule fits) says what the assistant is and how to connect a model.
const HELP: &[&str] = &[
    "local rule-based assistant without a language model",
    "`What time is it in Tokyo?`",
    "--llm-base-url URL --llm-model NAME",
    "`LLM_API_KEY`",
    "the `llm` agent",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_answers_by_its_rules_or_says_what_it_can_do() {
    let server = start_server(|_| {}).await;
    let mut client = Client::user(server.addr(), "alice").await;
    let table: &[AssistantCase<'_>] = &[
        ("What is 12*7?", &["calculator"], &["`12*7` = 84."]),
        (
            "And the time in Tokyo?",
            &["current_time"],
            &["In Asia/Tokyo it is"],
        ),
        (
            "How does resume work?",
            &["search_docs"],
            &["docs/protocol.md"],
        ),
        (
            "count the words in: the quick brown fox",
            &["text_stats"],
            &["The text has 4 words in 1 sentence(s) and 19 characters."],
        ),
        ("hello", &[], &["Hello!"]),
        ("Write me a haiku", &[], &["I cannot answer that."]),
        (
            "What time is it in Atlantis?",
            &[],
            &["I do not know a place called \"Atlantis\"", "Tokyo, London"],
        ),
    ];
    for &(message, tools, fragments) in table {
        let (run_id, evs) = run(&mut client, "assistant", message, 1).await;
        check_lifecycle(&evs).unwrap_or_else(|e| panic!("{message:?}: {e:?}"));
        assert_eq!(tools_called(&evs), tools, "{message:?}");
        let text = answer(&evs, &run_id);
        let text = text.as_str().unwrap();
        assert_eq!(
            streamed(&evs),
            text,
            "{message:?}: the answer is what was streamed"
        );
        let help = if tools.is_empty() { HELP } else { &[] };
        for fragment in fragments.iter().chain(help) {
            assert!(
                text.contains(fragment),
                "{message:?} lacks {fragment:?}: {text}"
            );
        }
        assert!(!text.contains("[local rule-based agent]"), "{text}");
        if !tools.is_empty() {
            assert!(!text.contains("--llm-base-url"), "{message:?}: {text}");
        }
        assert!(
            evs.iter().any(|e| matches!(&e.kind, EventKind::AgentThinking { reasoning, .. } if reasoning.contains("no language model"))),
            "{message:?}"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistants_tools_do_real_work() {
    let server = start_server(|_| {}).await;
    let mut client = Client::user(server.addr(), "alice").await;
    let (run_id, evs) = run(&mut client, "assistant", "What is 12*7?", 1).await;
    assert_eq!(
        tool_results(&evs),
        [(
            "calculator".to_owned(),
            json!({"expression": "12*7", "value": 84})
        )]
    );
    assert_eq!(answer(&evs, &run_id), "`12*7` = 84.");

    let (_, evs) = run(&mut client, "assistant", "And the time in Tokyo?", 1).await;
    let results = tool_results(&evs);
    assert_eq!(results[0].0, "current_time");
    assert_eq!(results[0].1["timezone"], "Asia/Tokyo");
    assert_eq!(results[0].1["utc_offset"], "+09:00");

    let (_, evs) = run(&mut client, "assistant", "How does resume work?", 1).await;
    let results = tool_results(&evs);
    assert_eq!(results[0].0, "search_docs");
    assert!(!results[0].1["results"].as_array().unwrap().is_empty());
    server.shutdown().await;
}

/// The command line the help answer gives is one `agent-server serve` accepts, and the
/// variables it names are the ones the server reads.
#[test]
fn the_help_answer_names_the_servers_real_model_settings() {
    use agent_server::config::ServeArgs;
    use clap::{Args, Command, FromArgMatches};

    let help = agents::assistant::help_answer(&agents::assistant::Help::Other);
    let line = help
        .split('`')
        .find(|part| part.starts_with("agent-server serve"))
        .unwrap_or_else(|| panic!("no command line in {help}"));
    let words = line
        .replace("URL", "http://localhost:11434/v1")
        .replace("NAME", "llama3");
    let serve = ServeArgs::augment_args(Command::new("agent-server serve")).no_binary_name(true);
    let matches = serve
        .clone()
        .try_get_matches_from(words.split_whitespace().skip(2))
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    let args = ServeArgs::from_arg_matches(&matches).unwrap();
    assert_eq!(
        (args.llm_base_url.as_deref(), args.llm_model.as_deref()),
        (Some("http://localhost:11434/v1"), Some("llama3"))
    );
    for (id, env) in [
        ("llm_base_url", "LLM_BASE_URL"),
        ("llm_model", "LLM_MODEL"),
        ("llm_api_key", "LLM_API_KEY"),
    ] {
        let arg = serve.get_arguments().find(|a| a.get_id() == id).unwrap();
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env), "{id}");
        assert!(help.contains(&format!("`{env}`")), "{help} lacks {env}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_hands_parts_to_sub_runs_that_end_before_it() {
    let server = start_server(|_| {}).await;
    let mut client = Client::user(server.addr(), "alice").await;
    let (run_id, evs) = run(
        &mut client,
        "triage",
        "What is 12*7? And the time in Tokyo?",
        3,
    )
    .await;
    let summary = check_lifecycle(&evs).unwrap();
    assert_eq!(
        (summary.runs, summary.sub_runs, summary.completed),
        (3, 2, 3)
    );
    assert_eq!(
        evs.last().unwrap().run_id.as_str(),
        run_id,
        "the parent must end last"
    );
    for e in evs.iter().filter(|e| e.run_id.as_str() != run_id) {
        assert_eq!(
            e.parent_run_id.as_ref().map(|p| p.as_str()),
            Some(run_id.as_str())
        );
        assert_eq!(&*e.agent_name, "assistant");
    }
    let result = answer(&evs, &run_id);
    let text = result["answer"].as_str().unwrap();
    assert!(
        text.starts_with("1. `12*7` = 84.\n2. In Asia/Tokyo it is "),
        "{text}"
    );
    assert_eq!(result["parts"].as_array().unwrap().len(), 2);
    server.shutdown().await;
}

/// With a history, a follow-up the rules can follow is read with the thread's earlier turns:
/// arithmetic on the previous result, the time in another place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_follows_up_on_the_threads_earlier_turns() {
    let dir = crate::approvals::store_dir();
    let store = crate::approvals::sqlite(&dir);
    let server = start_server(move |c| c.store = Some(store)).await;
    let mut client = Client::user(server.addr(), "alice").await;
    let mut thread: Option<String> = None;
    for (message, tool, said) in [
        ("What is 12*7?", "calculator", "84"),
        ("and times 2?", "calculator", "168"),
        ("and plus 1?", "calculator", "169"),
        ("What time is it in London?", "current_time", "London"),
        ("and in Tokyo?", "current_time", "Asia/Tokyo"),
    ] {
        let run = client
            .start_in_thread("assistant", message, &mut thread)
            .await;
        let got = events(&client.events_until_terminals(1).await);
        assert_eq!(tools_called(&got), [tool], "{message}");
        let text = answer(&got, &run).to_string();
        assert!(text.contains(said), "{message}: {text}");
    }
    server.shutdown().await;
}

/// A follow-up whose tool call waits for a person's approval goes on, once approved, with
/// the reading it began with (a resumed run is not given the earlier turns again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_that_waits_for_approval_resumes_with_the_same_reading() {
    let dir = crate::approvals::store_dir();
    let store = crate::approvals::sqlite(&dir);
    let server = start_server(crate::approvals::approving(&store, &["calculator"])).await;
    let addr = server.addr();
    let mut client = Client::user(addr, "alice").await;
    let mut thread: Option<String> = None;
    for (message, want) in [("What is 12*7?", "= 84"), ("and times 2?", "= 168")] {
        let run = client
            .start_in_thread("assistant", message, &mut thread)
            .await;
        let call = loop {
            let frame = client.next().await;
            if frame["run_id"] == run.as_str() && frame["type"] == "approval_requested" {
                break frame["data"]["tool_call_id"].as_str().unwrap().to_owned();
            }
        };
        let decision = json!({"decision": "approve"});
        let (status, body) = crate::approvals::decide(addr, "alice", &run, &call, decision).await;
        assert_eq!(status, 200, "{body}");
        let rest = crate::approvals::rest_of_run(&mut client, &run).await;
        let end = rest.last().unwrap();
        assert_eq!(end["type"], "agent_completed", "{end}");
        let result = end["data"]["result"].to_string();
        assert!(result.contains(want), "{message}: {result}");
    }
    server.shutdown().await;
}
