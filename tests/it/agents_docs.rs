//! What `GET /agents` offers a newcomer and where the assistant's documentation answers lead:
//! each local agent's example prompts, answered by the agent with a tool; an answer about the
//! project as the best section's prose with a link, and the link's page served by the server.

use agent_registry::AgentRegistry;
use serde_json::Value;

use crate::agents::{answer, run, tools_called};
use crate::server_support::{Client, start_server};

/// Every local agent's examples are listed, and each is answered with a tool (the triage
/// supervisor's through its sub-runs); an agent without examples lists none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_examples_are_listed_and_answered_with_tools() {
    let server = start_server(|c| c.synthetic_agent = true).await;
    let listed: Vec<Value> = crate::support::http_client()
        .get(format!("http://{}/agents", server.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let examples = |name: &str| -> Option<Vec<String>> {
        let agent = listed.iter().find(|a| a["name"] == name).unwrap();
        agent
            .get("examples")
            .map(|e| serde_json::from_value(e.clone()).unwrap())
    };
    let assistant = examples("assistant").expect("the assistant has examples");
    let wanted: Vec<&str> = agents::assistant::EXAMPLES
        .iter()
        .map(|(_, e)| *e)
        .collect();
    assert_eq!(assistant, wanted);
    let triage = examples("triage").expect("triage has examples");
    assert_eq!(triage, agents::triage::EXAMPLES);
    assert_eq!(examples("synthetic"), None, "no examples, no field");

    let mut client = Client::user(server.addr(), "newcomer").await;
    for (agent, prompts) in [("assistant", assistant), ("triage", triage)] {
        for prompt in prompts {
            let runs = if agent == "triage" {
                1 + agents::triage::split(&prompt).len()
            } else {
                1
            };
            let (run_id, events) = run(&mut client, agent, &prompt, runs).await;
            let tools = tools_called(&events);
            let parts = if agent == "triage" { runs - 1 } else { 1 };
            assert!(tools.len() >= parts, "{prompt:?}: {tools:?}");
            // The assistant answers in text, triage as `{"answer", "parts"}`.
            let text = answer(&events, &run_id).to_string();
            assert!(!text.contains("I cannot answer"), "{prompt:?}: {text}");
        }
    }
    // The registry's own listing is what the route serves.
    let mut registry = AgentRegistry::new();
    agents::register_local(&mut registry).unwrap();
    assert!(
        registry
            .list_agents()
            .iter()
            .all(|a| !a.examples.is_empty())
    );
    server.shutdown().await;
}

/// "How does resume work?" is answered with the "Resume" section's prose, its heading and a
/// link; the link opens the document's page at that heading; another name is a 404 that
/// lists the documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_documentation_answer_links_to_a_page_the_server_serves() {
    let server = start_server(|_| {}).await;
    let mut client = Client::user(server.addr(), "reader").await;
    let (run_id, events) = run(&mut client, "assistant", "How does resume work?", 1).await;
    let text = answer(&events, &run_id);
    let text = text.as_str().unwrap();
    assert!(
        text.starts_with("From **Resume** in docs/protocol.md:\n\nConnections drop"),
        "{text}"
    );
    for absent in ["```", "{\"status\"", "| `resume`"] {
        assert!(!text.contains(absent), "{absent:?} in {text}");
    }
    let link = text
        .split("](")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("a markdown link");
    assert_eq!(link, "/docs/protocol.md#resume");

    let http = crate::support::http_client();
    let page = http
        .get(format!("http://{}{}", server.addr(), link))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let content_type = page.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.headers().contains_key("content-security-policy"));
    let body = page.text().await.unwrap();
    assert!(
        body.contains("<h2 id=\"resume\">Resume</h2>"),
        "the anchor the link names"
    );

    let missing = http
        .get(format!("http://{}/docs/secrets.toml", server.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let refusal: Value = missing.json().await.unwrap();
    assert_eq!(refusal["error"], "not_found");
    let message = refusal["message"].as_str().unwrap();
    assert!(
        message.contains("no document \"secrets.toml\"") && message.contains("protocol.md"),
        "{message}"
    );
    server.shutdown().await;
}
