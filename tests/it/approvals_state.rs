//! What a paused `llm` run keeps, measured: a run that reached its 20th model turn (19
//! calculator calls, then a call that needs approval) in a thread with 20 earlier turns
//! pauses with its whole conversation, and resumes from it without asking the model again
//! for any turn it answered. The test prints the saved state's size (the closing note of
//! the approvals issue quotes it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use agent_registry::{AgentInput, AgentRegistry, ApprovalPolicy, Turn};
use core_context::approval::Decision;
use core_context::{RecordingSink, UserExecutionContext};
use execution_engine::{EngineConfig, ExecutionEngineFactory, RunOutcome};
use llm_agent::LlmConfig;
use serde_json::Value;

use crate::approvals_engine::{MemoryPaused, Tally, resume_paused};
use crate::llm::{DONE, Model, Reply, content, tool_piece};
use crate::support::user_id;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twenty_turn_conversation_pauses_with_its_whole_state_and_resumes_from_it() {
    let mut replies: Vec<Reply> = (1..=19)
        .map(|turn| {
            Reply::Stream(vec![
                tool_piece(
                    0,
                    Some(&format!("call_{turn}")),
                    Some("calculator"),
                    &format!(r#"{{"expression":"{turn}*7"}}"#),
                ),
                DONE,
            ])
        })
        .collect();
    replies.push(Reply::Stream(vec![
        tool_piece(0, Some("call_20"), Some("tally"), "{}"),
        DONE,
    ]));
    replies.push(Reply::Stream(vec![
        content("All 19 products, and the tally."),
        DONE,
    ]));
    let model = Model::start(replies).await;

    let tallies = Arc::new(AtomicU32::new(0));
    let mut registry = AgentRegistry::new();
    agents::register_local(&mut registry).unwrap();
    registry.register_tool(Tally(Arc::clone(&tallies))).unwrap();
    let mut llm = LlmConfig::new(format!("http://{}/v1", model.addr), "test-model");
    llm.max_turns = 25;
    llm_agent::register(&mut registry, llm).unwrap();
    let config = EngineConfig {
        approve_tools: ApprovalPolicy::new(["tally"]).unwrap(),
        ..EngineConfig::default()
    };
    let store = Arc::new(MemoryPaused::default());
    let sink = Arc::new(RecordingSink::new());
    let factory = ExecutionEngineFactory::new(Arc::new(registry), sink, config)
        .with_paused_runs(store.clone());

    // A thread with 20 earlier turns: a question and a paragraph-long answer each.
    let history: Vec<Turn> = (1..=20)
        .map(|n| Turn {
            user: format!("Question {n}: what is {n} times seven, and why does it matter here?"),
            assistant: format!(
                "Answer {n}: {n} times seven is {}. {}",
                n * 7,
                "It matters because the running total feeds the next step. ".repeat(3)
            ),
        })
        .collect();
    let input = AgentInput {
        history,
        ..AgentInput::message("Multiply 1 to 19 by seven, then count.")
    };
    let engine = factory
        .create_for_user(
            UserExecutionContext::builder(user_id("alice"))
                .build()
                .unwrap(),
        )
        .unwrap();
    let outcome = engine
        .execute_agent("llm", input)
        .await
        .unwrap()
        .wait()
        .await;
    factory.release(&engine);
    assert!(
        matches!(&outcome, RunOutcome::Paused(calls) if calls.len() == 1),
        "{outcome:?}"
    );

    let paused = store.runs.lock().pop().unwrap();
    let state = serde_json::to_string(&paused.state).unwrap();
    let messages = paused.state["agent"]["messages"].as_array().unwrap();
    // 20 earlier turns (40 messages), the question, and 19 tool turns (assistant + tool)
    // and the 20th turn's assistant message; the held call waits in `calls`.
    assert_eq!(messages.len(), 40 + 1 + 19 * 2 + 1);
    for turn in 1..=19 {
        let wanted = format!("\"value\":{}", turn * 7);
        assert!(
            messages.iter().any(|m| m["role"] == "tool"
                && m["tool_call_id"] == format!("call_{turn}").as_str()
                && m["content"].as_str().is_some_and(|c| c.contains(&wanted))),
            "turn {turn}'s result is kept"
        );
    }
    assert_eq!(paused.state["agent"]["turns"], 20);
    eprintln!(
        "paused state of a 20-turn run in a thread of 20 earlier turns: {} bytes of JSON ({} messages); the held call's arguments: {} bytes",
        state.len(),
        messages.len(),
        paused.calls[0].0.arguments.to_string().len()
    );

    // Resumed, approved: the model is asked once more (not again for turns 1 to 20).
    let done = resume_paused(&factory, paused.clone(), |_| Decision::Approve, None).await;
    let RunOutcome::Completed { output, .. } = done else {
        panic!("{done:?}");
    };
    assert_eq!(
        output.result,
        Value::from("All 19 products, and the tally.")
    );
    assert_eq!(tallies.load(Ordering::SeqCst), 1);
    let requests = model.requests();
    assert_eq!(requests.len(), 21);
    let last = requests[20].1["messages"].as_array().unwrap();
    assert_eq!(
        last.len(),
        messages.len() + 1,
        "the conversation plus the tally's result"
    );
}
