//! The mapping as a table: engine event sequences and the AG-UI events they give.

use agent_protocol::SequencedEvent;
use serde_json::{Value, json};

use super::{ClientIds, Mapper};

const TOP: &str = "run_01JD6QA0B1C2D3E4F5G6H7J8K9";
const SUB: &str = "run_01JD6QA0B1C2D3E4F5G6H7J8KA";

/// An engine frame of `run` (a sub-run of [`TOP`] when it is [`SUB`]).
fn frame(seq: u64, run: &str, kind: &str, data: Value) -> Value {
    let mut frame = json!({"type": kind, "seq": seq, "run_id": run,
        "thread_id": "thr_01JD6Q9V3K8Z4X2M7N5P0R1S2T", "agent_name": "assistant",
        "timestamp": "2026-11-24T10:00:00.000000Z", "data": data});
    if run == SUB {
        frame["parent_run_id"] = json!(TOP);
    }
    frame
}

/// Maps `frames` in order; every mapped event.
fn mapped(frames: &[Value]) -> Vec<Value> {
    let ids = ClientIds {
        thread_id: "client-thread".into(),
        run_id: "client-run".into(),
    };
    let mut mapper = Mapper::new(ids, TOP).with_raw_events(true);
    let mut out = Vec::new();
    for raw in frames {
        let event: SequencedEvent = serde_json::from_value(raw.clone()).unwrap();
        out.extend(mapper.map(&event.event, raw));
    }
    out
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// A case: what it shows, the engine's frames, the AG-UI event types they give.
type Case = (&'static str, Vec<Value>, Vec<&'static str>);

fn tool_frames() -> (Value, Value) {
    (
        json!({"tool_call_id": "call_1", "tool_name": "calculator", "arguments": {"expression": "6*7"}}),
        json!({"tool_call_id": "call_1", "tool_name": "calculator", "result": {"value": 42},
               "is_error": false, "duration_ms": 1}),
    )
}

/// Answers, streamed or not.
fn answer_cases() -> Vec<Case> {
    let (tool, done) = tool_frames();
    vec![
        (
            "a streamed answer after thinking and a tool",
            vec![
                frame(1, TOP, "agent_started", json!({"message": "6*7?"})),
                frame(
                    2,
                    TOP,
                    "agent_thinking",
                    json!({"reasoning": "arithmetic", "step": 1}),
                ),
                frame(3, TOP, "tool_executing", tool.clone()),
                frame(4, TOP, "tool_completed", done.clone()),
                frame(5, TOP, "agent_response_chunk", json!({"delta": "6*7 "})),
                frame(6, TOP, "agent_response_chunk", json!({"delta": "= 42"})),
                frame(
                    7,
                    TOP,
                    "agent_completed",
                    json!({"result": "6*7 = 42", "duration_ms": 5}),
                ),
            ],
            vec![
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
            ],
        ),
        (
            "an answer that was not streamed becomes one text message",
            vec![frame(
                1,
                TOP,
                "agent_completed",
                json!({"result": "42", "duration_ms": 1}),
            )],
            vec![
                "TEXT_MESSAGE_START",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_END",
                "RUN_FINISHED",
            ],
        ),
    ]
}

/// Answers around tools, sub-runs, errors and cancellations.
fn other_cases() -> Vec<Case> {
    let (tool, done) = tool_frames();
    vec![
        (
            "a streamed answer is not sent again at the end, even after a tool",
            vec![
                frame(
                    1,
                    TOP,
                    "agent_response_chunk",
                    json!({"delta": "Let me check."}),
                ),
                frame(2, TOP, "tool_executing", tool),
                frame(3, TOP, "tool_completed", done),
                frame(
                    4,
                    TOP,
                    "agent_completed",
                    json!({"result": "Let me check.", "duration_ms": 1}),
                ),
            ],
            vec![
                "TEXT_MESSAGE_START",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_END",
                "TOOL_CALL_START",
                "TOOL_CALL_ARGS",
                "TOOL_CALL_END",
                "TOOL_CALL_RESULT",
                "RUN_FINISHED",
            ],
        ),
        (
            "a sub-run is a subagent",
            vec![
                frame(1, TOP, "agent_started", json!({"message": "two parts"})),
                frame(2, SUB, "agent_started", json!({"message": "part one"})),
                frame(3, SUB, "agent_response_chunk", json!({"delta": "one"})),
                frame(
                    4,
                    SUB,
                    "agent_completed",
                    json!({"result": "one", "duration_ms": 1}),
                ),
                frame(
                    5,
                    TOP,
                    "agent_completed",
                    json!({"result": {"parts": 1}, "duration_ms": 2}),
                ),
            ],
            vec![
                "SUBAGENT_STARTED",
                "TEXT_MESSAGE_START",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_END",
                "SUBAGENT_FINISHED",
                "RUN_FINISHED",
            ],
        ),
        (
            "errors and cancellations",
            vec![
                frame(
                    1,
                    SUB,
                    "agent_cancelled",
                    json!({"reason": "cancelled by the user"}),
                ),
                frame(
                    2,
                    TOP,
                    "agent_error",
                    json!({"code": "timeout", "message": "too slow"}),
                ),
            ],
            vec!["SUBAGENT_ERROR", "RUN_ERROR"],
        ),
    ]
}

#[test]
fn runs_map_to_agui_events_in_order() {
    for (what, frames, expected) in answer_cases().into_iter().chain(other_cases()) {
        let events = mapped(&frames);
        assert_eq!(types(&events), expected, "{what}");
        let mut last_raw = None;
        for event in &events {
            // The first AG-UI event of each engine event says when it happened.
            let first = last_raw != Some(&event["rawEvent"]);
            last_raw = Some(&event["rawEvent"]);
            assert_eq!(
                event["timestamp"].as_u64().is_some_and(|t| t > 0),
                first,
                "{what}: {event}"
            );
            assert!(
                event["rawEvent"]["seq"].as_u64().is_some(),
                "{what}: {event}"
            );
            let of_sub = event["rawEvent"]["run_id"] == SUB;
            assert_eq!(event["subagentRunId"] == SUB, of_sub, "{what}: {event}");
        }
    }
}

#[test]
fn fields_carry_the_clients_ids_and_the_engines_detail() {
    let events = mapped(&[
        frame(
            1,
            TOP,
            "tool_executing",
            json!({"tool_call_id": "call_9", "tool_name": "t", "arguments": {"a": 1}}),
        ),
        frame(
            2,
            TOP,
            "tool_completed",
            json!({"tool_call_id": "call_9", "tool_name": "t",
            "result": "oops", "is_error": true, "duration_ms": 3}),
        ),
        frame(
            3,
            TOP,
            "agent_cancelled",
            json!({"reason": "cancelled by the user"}),
        ),
        frame(
            4,
            TOP,
            "agent_completed",
            json!({"result": "x", "duration_ms": 1,
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}),
        ),
    ]);
    assert_eq!(events[0]["toolCallName"], "t");
    assert_eq!(events[1]["delta"], r#"{"a":1}"#);
    assert_eq!(events[3]["content"], "oops");
    assert_eq!(events[3]["metadata"]["agentEngine"]["isError"], true);
    assert_eq!(events[4]["code"], "cancelled");
    let finished = events.last().unwrap();
    assert_eq!(
        (&finished["threadId"], &finished["runId"]),
        (&json!("client-thread"), &json!("client-run"))
    );
    assert_eq!(
        finished["usage"],
        json!([{"inputTokens": 10, "outputTokens": 2, "totalTokens": 12}])
    );
}

#[test]
fn the_engines_frame_is_carried_only_on_request() {
    let frames = [
        frame(1, TOP, "agent_started", json!({"message": "hi"})),
        frame(2, TOP, "agent_response_chunk", json!({"delta": "hello"})),
    ];
    let ids = ClientIds {
        thread_id: "t".into(),
        run_id: "r".into(),
    };
    let mut plain = Mapper::new(ids, TOP);
    for raw in &frames {
        let event: SequencedEvent = serde_json::from_value(raw.clone()).unwrap();
        for mapped in plain.map(&event.event, raw) {
            assert!(mapped.get("rawEvent").is_none(), "{mapped}");
        }
    }
    let with_raw = mapped(&frames);
    assert!(with_raw.iter().all(|e| e["rawEvent"]["seq"].is_u64()));
}
