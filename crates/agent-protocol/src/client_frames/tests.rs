//! The client frame parser's tests: every accepted and refused frame, with its message.

use serde_json::json;

use super::*;
use crate::codes::ErrorCode as code;

/// What a frame should parse to: `Ok(type)`, or `Err((code, message fragment))`.
type Expected<'a> = Result<&'a str, (code, &'a str)>;

/// Parses `frame` and compares the outcome with `expected`.
fn check(frame: &str, expected: Expected<'_>) {
    let got = parse_client_frame(frame, "assistant");
    match (&got, expected.clone()) {
        (Ok(ClientFrame::Ping), Ok("ping"))
        | (Ok(ClientFrame::StartAgent { .. }), Ok("start_agent"))
        | (Ok(ClientFrame::CancelRun { .. }), Ok("cancel_run"))
        | (Ok(ClientFrame::ResolveApproval { .. }), Ok("resolve_approval")) => {}
        (Err(e), Err((code, fragment))) => {
            assert_eq!(e.code, code, "{frame}: {e:?}");
            assert!(
                e.message.contains(fragment),
                "{frame}: {:?} lacks {fragment:?}",
                e.message
            );
        }
        _ => panic!("{frame}: expected {expected:?}, got {got:?}"),
    }
}

#[test]
fn client_frame_table() {
    let table: &[(&str, Expected<'_>)] = &[
        (r#"{"type":"ping"}"#, Ok("ping")),
        (
            r#"{"type":"start_agent","request_id":"r1","payload":{"agent":"assistant","message":"hi"}}"#,
            Ok("start_agent"),
        ),
        (
            r#"{"type":"start_agent","payload":{"agent":"a","message":"hi","thread_id":"thr_abc","input":{"x":1}}}"#,
            Ok("start_agent"),
        ),
        (
            r#"{"type":"cancel_run","payload":{"run_id":"run_abc"}}"#,
            Ok("cancel_run"),
        ),
        (
            r#"{"type":"user_message","payload":{"content":"hello"}}"#,
            Ok("start_agent"),
        ),
        (
            r#"{"type":"chat","payload":{"text":"hello"}}"#,
            Ok("start_agent"),
        ),
        ("not json", Err((code::InvalidJson, "not valid JSON"))),
        ("[1,2]", Err((code::InvalidFrame, "must be a JSON object"))),
        (
            r#"{"payload":{}}"#,
            Err((code::InvalidFrame, "no \"type\" field")),
        ),
        (
            r#"{"type":7}"#,
            Err((
                code::InvalidFrame,
                "\"type\" must be a string, got a number",
            )),
        ),
        (
            r#"{"type":"launch"}"#,
            Err((
                code::UnknownType,
                "unknown message type \"launch\"; expected one of: start_agent",
            )),
        ),
        (
            r#"{"type":"start_agent"}"#,
            Err((code::MissingField, "no \"payload\" object")),
        ),
        (
            r#"{"type":"start_agent","payload":[]}"#,
            Err((
                code::InvalidField,
                "\"payload\" must be an object, got an array",
            )),
        ),
        (
            r#"{"type":"start_agent","payload":{"message":"hi"}}"#,
            Err((code::MissingField, "payload.agent is required")),
        ),
        (
            r#"{"type":"start_agent","payload":{"agent":"a"}}"#,
            Err((code::MissingField, "payload.message is required")),
        ),
        (
            r#"{"type":"start_agent","payload":{"agent":"a","message":""}}"#,
            Err((
                code::InvalidField,
                "the message is empty: type something for the agent",
            )),
        ),
        (
            r#"{"type":"start_agent","payload":{"agent":"a","message":" \n\t "}}"#,
            Err((code::InvalidField, "the message is empty")),
        ),
        (
            r#"{"type":"start_agent","payload":{"agent":"a","message":" . "}}"#,
            Ok("start_agent"),
        ),
        (
            r#"{"type":"start_agent","payload":{"agent":5,"message":"hi"}}"#,
            Err((
                code::InvalidField,
                "payload.agent must be a string, got a number",
            )),
        ),
        (
            r#"{"type":"start_agent","payload":{"agent":"","message":"hi"}}"#,
            Err((code::InvalidField, "1 to 64 characters")),
        ),
        (
            r#"{"type":"start_agent","payload":{"agent":"a","message":"hi","input":"x"}}"#,
            Err((
                code::InvalidField,
                "payload.input must be a JSON object, got a string",
            )),
        ),
        (
            r#"{"type":"start_agent","payload":{"agent":"a","message":"hi","thread_id":"bad id"}}"#,
            Err((
                code::InvalidField,
                "payload.thread_id: thread id contains ' '",
            )),
        ),
        (
            r#"{"type":"start_agent","payload":{"agent":"a","message":"hi","thread_id":"default"}}"#,
            Err((code::InvalidField, "placeholder")),
        ),
        (
            r#"{"type":"cancel_run","payload":{}}"#,
            Err((code::MissingField, "payload.run_id is required")),
        ),
        (
            r#"{"type":"cancel_run","payload":{"run_id":""}}"#,
            Err((code::InvalidField, "run id must not be empty")),
        ),
        (
            r#"{"type":"resolve_approval","payload":{"run_id":"run_1","tool_call_id":"c1","decision":"approve"}}"#,
            Ok("resolve_approval"),
        ),
        (
            r#"{"type":"resolve_approval","payload":{"run_id":"run_1","tool_call_id":"c1","decision":"reject","message":"no"}}"#,
            Ok("resolve_approval"),
        ),
        (
            r#"{"type":"resolve_approval","payload":{"tool_call_id":"c1","decision":"approve"}}"#,
            Err((code::MissingField, "payload.run_id is required")),
        ),
        (
            r#"{"type":"resolve_approval","payload":{"run_id":"run_1","decision":"approve"}}"#,
            Err((code::MissingField, "payload.tool_call_id is required")),
        ),
        (
            r#"{"type":"resolve_approval","payload":{"run_id":"run_1","tool_call_id":"","decision":"approve"}}"#,
            Err((
                code::InvalidField,
                "payload.tool_call_id must be 1 to 128 bytes",
            )),
        ),
        (
            r#"{"type":"resolve_approval","payload":{"run_id":"run_1","tool_call_id":"c1"}}"#,
            Err((code::MissingField, "payload.decision is required")),
        ),
        (
            r#"{"type":"resolve_approval","payload":{"run_id":"run_1","tool_call_id":"c1","decision":"yes"}}"#,
            Err((
                code::InvalidField,
                "payload.decision \"yes\" is not a decision; use one of approve, edit, reject, respond",
            )),
        ),
        (
            r#"{"type":"resolve_approval","payload":{"run_id":"run_1","tool_call_id":"c1","decision":"edit"}}"#,
            Err((code::InvalidField, "payload.arguments is required for edit")),
        ),
        (
            r#"{"type":"resolve_approval","payload":{"run_id":"run_1","tool_call_id":"c1","decision":"respond","message":7}}"#,
            Err((
                code::InvalidField,
                "payload.message must be a string, got a number",
            )),
        ),
        (
            r#"{"type":"chat","payload":{}}"#,
            Err((
                code::MissingField,
                "payload.message, payload.content or payload.text",
            )),
        ),
        (
            r#"{"type":"user_message","payload":{"content":""}}"#,
            Err((code::InvalidField, "the message is empty")),
        ),
        (
            r#"{"type":"chat","payload":{"text":"\u00a0 "}}"#,
            Err((code::InvalidField, "the message is empty")),
        ),
        (
            r#"{"type":"chat","payload":{"text":3}}"#,
            Err((code::InvalidField, "must be a string, got a number")),
        ),
        (
            r#"{"type":"ping","request_id":5}"#,
            Err((code::InvalidField, "request_id must be a string")),
        ),
    ];
    for (frame, expected) in table {
        check(frame, expected.clone());
    }
}

#[test]
fn errors_echo_the_request_id_and_legacy_frames_use_the_default_agent() {
    let err = parse_client_frame(
        r#"{"type":"start_agent","request_id":"r9","payload":{}}"#,
        "assistant",
    )
    .unwrap_err();
    assert_eq!(err.request_id.as_deref(), Some("r9"));
    let ClientFrame::StartAgent { payload: start, .. } = parse_client_frame(
        r#"{"type":"user_message","payload":{"content":"hello"}}"#,
        "assistant",
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        (start.agent.as_str(), start.message.as_str()),
        ("assistant", "hello")
    );
}

#[test]
fn every_client_example_of_the_protocol_parses() {
    let examples: Value =
        serde_json::from_str(include_str!("../../../../docs/protocol-examples.json")).unwrap();
    for frame in examples["client_to_server"].as_array().unwrap() {
        let parsed = parse_client_frame(&frame.to_string(), "assistant")
            .unwrap_or_else(|e| panic!("{frame}: {e:?}"));
        // Frames in today's vocabulary re-encode to exactly what was parsed; legacy
        // frames become the `start_agent` they stand for.
        let encoded: Value = serde_json::from_str(&parsed.to_text()).unwrap();
        if matches!(frame["type"].as_str(), Some("user_message" | "chat")) {
            assert_eq!(encoded["type"], "start_agent", "{frame}");
            assert_eq!(encoded["payload"]["agent"], "assistant", "{frame}");
        } else {
            assert_eq!(&encoded, frame);
        }
    }
}

#[test]
fn built_frames_have_the_wire_shape() {
    let start = ClientFrame::start_agent(
        Some("r1".into()),
        StartAgent {
            agent: "assistant".into(),
            message: "hi".into(),
            thread_id: None,
            input: None,
            multitask: None,
        },
    );
    assert_eq!(
        serde_json::from_str::<Value>(&start.to_text()).unwrap(),
        json!({"type":"start_agent","request_id":"r1","payload":{"agent":"assistant","message":"hi"}})
    );
    let cancel = ClientFrame::cancel_run(None, RunId::parse("run_1").unwrap());
    assert_eq!(
        cancel.to_text(),
        r#"{"type":"cancel_run","payload":{"run_id":"run_1"}}"#
    );
    assert_eq!(ClientFrame::Ping.to_text(), r#"{"type":"ping"}"#);
    assert_eq!(start.request_id(), Some("r1"));
}
