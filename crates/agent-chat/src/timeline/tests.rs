//! The timeline's tests: every frame of `docs/protocol-examples.json` rendered in both
//! layouts, compared as whole outputs.

use agent_protocol::ServerMessage;
use serde_json::json;

use super::*;

const EXAMPLES: &str = include_str!("../../../../docs/protocol-examples.json");

/// The first server-to-client example frame that `matches`.
pub(crate) fn example_where(matches: impl Fn(&Value) -> bool) -> Value {
    let examples: Value = serde_json::from_str(EXAMPLES).unwrap();
    examples["server_to_client"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| matches(f))
        .unwrap()
        .clone()
}

/// The first server-to-client example frame of type `kind`.
pub(crate) fn example(kind: &str) -> Value {
    example_where(|f| f["type"] == kind)
}

/// Renders `frame` as the chat does: through the protocol's types.
fn render(timeline: &mut Timeline, frame: &Value, elapsed: Duration, depth: usize) -> String {
    match ServerMessage::parse(&frame.to_string()).unwrap() {
        ServerMessage::Event(event) => timeline.render(&event.event, elapsed, depth),
        ServerMessage::Unknown(frame) => {
            timeline.render_unknown(&frame.kind, &frame.value["data"], elapsed, depth)
        }
        ServerMessage::Frame(other) => panic!("not an event: {other:?}"),
        ServerMessage::Thread(other) => panic!("not a run's event: {other:?}"),
    }
}

/// The depth the filter gives `frame`, or `None` for frames that are not events.
fn depth_of(filter: &mut RunFilter, frame: &Value) -> Option<usize> {
    match ServerMessage::parse(&frame.to_string()).unwrap() {
        ServerMessage::Event(event) => filter.depth_of(
            event.event.run_id.as_str(),
            event.event.parent_run_id.as_ref().map(|p| p.as_str()),
        ),
        _ => None,
    }
}

/// Renders `frames` (each seen at its elapsed milliseconds, at depth 0) with one timeline
/// and compares the whole output.
fn check(frames: &[(Value, u64)], expected: &str) {
    check_look(Look::default(), &frames_at(frames, 0), expected);
}

fn frames_at(frames: &[(Value, u64)], depth: usize) -> Vec<(Value, u64, usize)> {
    frames
        .iter()
        .map(|(frame, ms)| (frame.clone(), *ms, depth))
        .collect()
}

/// [`check`] with a look, and each frame at its own depth; escape codes are compared as
/// readable tags (`<dim>`, `</dim>`, `<b>`, `</>`).
fn check_look(look: Look, frames: &[(Value, u64, usize)], expected: &str) {
    let mut timeline = Timeline::new(look);
    let mut got = String::new();
    for (frame, ms, depth) in frames {
        got.push_str(&render(
            &mut timeline,
            frame,
            Duration::from_millis(*ms),
            *depth,
        ));
    }
    got.push_str(&timeline.flush());
    let got = got
        .replace(DIM, "<dim>")
        .replace(UNDIM, "</dim>")
        .replace("\x1b[1m", "<b>")
        .replace("\x1b[0m", "</>");
    assert_eq!(
        got, expected,
        "\n--- got ---\n{got}\n--- expected ---\n{expected}"
    );
}

fn with_data(kind: &str, data: Value) -> Value {
    let mut frame = example(kind);
    frame["data"] = data;
    frame
}

#[test]
fn each_event_of_the_examples_renders_as_one_line() {
    let table: &[(&str, u64, &str)] = &[
        (
            "agent_started",
            0,
            "+0.000s  started     \"What is 12*7?\"\n",
        ),
        (
            "agent_thinking",
            1,
            "+0.001s  thinking    (1) This is arithmetic; I will use the calculator.\n",
        ),
        (
            "tool_executing",
            2,
            "+0.002s  tool        calculator {\"expression\":\"12*7\"}\n",
        ),
        (
            "tool_completed",
            3,
            "+0.003s  tool done   calculator -> {\"value\":84} (0 ms)\n",
        ),
        (
            "agent_response_chunk",
            3,
            "+0.003s  answer      12*7 = 84\n",
        ),
        (
            "agent_completed",
            12,
            "+0.012s  completed   in 1 ms: 12*7 = 84\n",
        ),
        (
            "agent_error",
            25_001,
            "+25.001s  error       timeout: the run took longer than its 25 s limit\n",
        ),
        (
            "agent_cancelled",
            900,
            "+0.900s  cancelled   cancelled by the user\n",
        ),
        (
            "budget_exhausted",
            40,
            "+0.040s  budget      your token budget is used up (99,200 of 100,000 tokens): the \
             run waits, and goes on by itself when the budget resets at 2026-12-01 00:00 UTC, or \
             sooner if your limit is raised\n",
        ),
    ];
    for (kind, ms, expected) in table {
        check(&[(example(kind), *ms)], expected);
    }
}

#[test]
fn a_whole_run_reads_as_a_timeline() {
    let chunk = |delta: &str| with_data("agent_response_chunk", json!({ "delta": delta }));
    check(
        &[
            (example("agent_started"), 0),
            (example("tool_executing"), 1),
            (chunk("12*7"), 2),
            (chunk(" = 84"), 3),
            (example("agent_completed"), 4),
        ],
        "+0.000s  started     \"What is 12*7?\"\n\
         +0.001s  tool        calculator {\"expression\":\"12*7\"}\n\
         +0.002s  answer      12*7 = 84\n\
         +0.004s  completed   in 1 ms\n",
    );
}

#[test]
fn variants_of_events_render_readably() {
    let table: Vec<(Value, &str)> = vec![
        (
            with_data(
                "tool_completed",
                json!({"tool_call_id":"c1","tool_name":"clock","result":{"error":"no zone"},
                       "is_error":true,"duration_ms":3}),
            ),
            "+0.000s  tool failed clock -> {\"error\":\"no zone\"} (3 ms)\n",
        ),
        (
            with_data(
                "agent_completed",
                json!({"result":{"n":1},"duration_ms":7,"usage":{"input_tokens":5}}),
            ),
            "+0.000s  completed   in 7 ms: {\"n\":1} (usage {\"input_tokens\":5})\n",
        ),
        (
            with_data(
                "agent_thinking",
                json!({"reasoning":"one\ntwo\u{1b}[2J","step":2}),
            ),
            "+0.000s  thinking    (2) one\n                     two\\u{1b}[2J\n",
        ),
        (
            with_data("agent_completed", json!({"result":null,"duration_ms":0})),
            "+0.000s  completed   in 0 ms\n",
        ),
        (
            json!({"type":"agent_dreaming","seq":1,"run_id":"r","data":{"x":1}}),
            "+0.000s  event       agent_dreaming {\"x\":1}\n",
        ),
    ];
    for (frame, expected) in table {
        check(&[(frame, 0)], expected);
    }
}

#[test]
fn sub_runs_are_indented_and_other_runs_ignored() {
    let mut sub_run = example("agent_started");
    sub_run["run_id"] = json!("run_sub");
    sub_run["parent_run_id"] = json!("run_01JD6QA0B1C2D3E4F5G6H7J8K9");
    let mut grandchild = sub_run.clone();
    grandchild["run_id"] = json!("run_grandchild");
    grandchild["parent_run_id"] = json!("run_sub");

    // (frame, depth it is shown at, or None when ignored), for the run of the examples.
    let table: Vec<(Value, Option<usize>)> = vec![
        (example("agent_started"), Some(0)),
        (sub_run.clone(), Some(1)),
        (grandchild, Some(2)),
        // The example's sub-run belongs to another parent: another tab's run.
        (example_where(|f| f.get("parent_run_id").is_some()), None),
        (example("agent_error"), None),
        (example("run_accepted"), None),
    ];
    let mut filter = RunFilter::new("run_01JD6QA0B1C2D3E4F5G6H7J8K9");
    for (frame, expected) in table {
        assert_eq!(depth_of(&mut filter, &frame), expected, "{frame}");
    }

    let mut timeline = Timeline::default();
    assert_eq!(
        render(&mut timeline, &sub_run, Duration::from_millis(5), 1),
        "+0.005s    started     sub-run assistant: \"What is 12*7?\"\n"
    );
}

/// Frames with the milliseconds each is seen at and the depth of its run.
type Frames = Vec<(Value, u64, usize)>;

const PLAIN: Look = Look {
    conversation: true,
    ansi: false,
    width: 0,
};
const ANSI: Look = Look {
    conversation: true,
    ansi: true,
    width: 0,
};

fn chunk(delta: &str) -> Value {
    with_data("agent_response_chunk", json!({ "delta": delta }))
}

/// A frame of the run itself (depth 0) seen at `ms`.
fn own(frame: Value, ms: u64) -> (Value, u64, usize) {
    (frame, ms, 0)
}

#[test]
fn a_conversation_shows_the_answer_as_a_message_between_dimmed_steps() {
    let mut sub_run = example("agent_started");
    sub_run["run_id"] = json!("run_sub");
    let run = |chunks: &[&str]| {
        let mut frames = vec![
            own(example("agent_started"), 0),
            own(example("agent_thinking"), 1),
            (sub_run.clone(), 2, 1),
        ];
        frames.extend(chunks.iter().map(|c| own(chunk(c), 3)));
        frames.push(own(example("agent_completed"), 4));
        frames
    };
    let table: Vec<(Look, Frames, &str)> = vec![
        (
            PLAIN,
            run(&["12*7", " = 84"]),
            "+0.001s  thinking    (1) This is arithmetic; I will use the calculator.\n\
             +0.002s    started     sub-run assistant: \"What is 12*7?\"\n\
             12*7 = 84\n\
             +0.004s  completed   in 1 ms\n",
        ),
        (
            ANSI,
            run(&["**12*7", "** = 84"]),
            "<dim>+0.001s  thinking    (1) This is arithmetic; I will use the calculator.</dim>\n\
             <dim>+0.002s    started     sub-run assistant: \"What is 12*7?\"</dim>\n\
             <b>12*7</> = 84</>\n\
             <dim>+0.004s  completed   in 1 ms</dim>\n",
        ),
    ];
    for (look, frames, expected) in table {
        check_look(look, &frames, expected);
    }
}

#[test]
fn a_conversation_says_how_each_run_ended() {
    let completed = |result: Value| {
        own(
            with_data(
                "agent_completed",
                json!({"result": result, "duration_ms": 2}),
            ),
            4,
        )
    };
    let table: Vec<(Look, Frames, &str)> = vec![
        // A result that was not streamed is the message, when it is text.
        (
            ANSI,
            vec![completed(json!("12*7 = 84"))],
            "12*7 = 84\n<dim>+0.004s  completed   in 2 ms</dim>\n",
        ),
        (
            PLAIN,
            vec![completed(json!({"answer": "84", "parts": []}))],
            "84\n+0.004s  completed   in 2 ms\n",
        ),
        (
            PLAIN,
            vec![completed(json!({"n": 1}))],
            "+0.004s  completed   in 2 ms: {\"n\":1}\n",
        ),
        (
            PLAIN,
            vec![
                own(chunk("one\ntwo"), 1),
                own(example("agent_error"), 25_001),
            ],
            "one\ntwo\n\
             +25.001s  failed      the run took longer than its 25 s limit (timeout)\n",
        ),
        (
            ANSI,
            vec![
                own(chunk("half a li"), 1),
                own(example("agent_cancelled"), 900),
            ],
            "half a li\n+0.900s  cancelled   cancelled by the user\n",
        ),
    ];
    for (look, frames, expected) in table {
        check_look(look, &frames, expected);
    }
}

/// On a terminal of known width a tool's step is one screen line: its arguments and result
/// cut with `…`; the answer and the other steps are not cut.
#[test]
fn a_conversations_tool_steps_fit_the_terminal() {
    let look = Look { width: 60, ..ANSI };
    let big = json!({"results": "x".repeat(500)});
    let frames = vec![
        own(
            with_data(
                "tool_executing",
                json!({"tool_call_id": "c1", "tool_name": "search_docs", "arguments": {"query": "y".repeat(200)}}),
            ),
            1,
        ),
        own(
            with_data(
                "tool_completed",
                json!({"tool_call_id": "c1", "tool_name": "search_docs", "result": big, "is_error": false, "duration_ms": 3}),
            ),
            2,
        ),
        own(chunk(&"word ".repeat(30)), 3),
    ];
    let mut timeline = Timeline::new(look);
    let mut got = String::new();
    for (frame, ms, depth) in &frames {
        got.push_str(&render(
            &mut timeline,
            frame,
            Duration::from_millis(*ms),
            *depth,
        ));
    }
    got.push_str(&timeline.flush());
    let plain = got
        .replace(DIM, "")
        .replace(UNDIM, "")
        .replace("\x1b[0m", "")
        .replace("\r\x1b[2K", "\n");
    let steps: Vec<&str> = plain.lines().filter(|l| l.contains("  tool")).collect();
    assert_eq!(steps.len(), 2, "{plain}");
    for step in steps {
        assert_eq!(step.chars().count(), 59, "{step}");
        assert!(step.ends_with('…'), "{step}");
    }
    assert!(
        plain
            .lines()
            .filter(|l| l.starts_with("word"))
            .all(|l| l.chars().count() < 60),
        "{plain}"
    );
    // On the screen (each tail replaced by what follows it) the answer is whole: wrapped,
    // not cut.
    let mut screen = String::new();
    for (i, piece) in got.split("\r\x1b[2K").enumerate() {
        if i > 0 {
            screen.truncate(screen.rfind('\n').map_or(0, |at| at + 1));
        }
        screen.push_str(piece);
    }
    assert_eq!(screen.matches("word").count(), 30, "{screen}");
}
