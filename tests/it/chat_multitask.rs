//! Double texting in `agent-server chat`'s conversation, on a real pseudo-terminal (the
//! harness of `chat_cli`): a line typed while an answer runs is sent at once, said to be
//! queued, and answered after it; `/steer` into an agent that takes no messages is queued
//! too; `/interrupt` stops the running answer (shown as interrupted) and its message is
//! answered next, ahead of the queued one; and into the `llm` agent, which takes messages,
//! `/steer` joins the running answer ("added to the running answer", then "you added").
//! The server's side is checked through a second client of the same user: the runs, their
//! messages, their ends, and that a thread's runs never overlapped. And since the editor now
//! reads while answers run, a server lost meanwhile ends the chat only once the editor has
//! given the terminal back.

use agent_protocol::{EventKind, SequencedEvent};
use llm_agent::LlmConfig;
use serde_json::Value;

use crate::chat_cli::{PROMPT, Terminal, thread_of};
use crate::llm::{DONE, Model, Piece, Reply, content};
use crate::multitask::one_at_a_time;
use crate::server_support::{KillableServer, next_event, start_server, url};

const USER: &str = "double-texter";

/// A client of `user` on `server_url`, to watch the runs from the server's side.
async fn observer(server_url: &str, user: &str) -> agent_client::Client {
    let token = agent_client::get_dev_token(server_url, user)
        .await
        .unwrap()
        .token;
    agent_client::Client::connect(server_url, &token)
        .await
        .unwrap()
}

/// `observer`'s events until `runs` runs (not sub-runs) have ended.
async fn until_runs_ended(observer: &mut agent_client::Client, runs: usize) -> Vec<SequencedEvent> {
    let mut events = Vec::new();
    let mut ended = 0;
    while ended < runs {
        let event = next_event(observer).await;
        if event.event.parent_run_id.is_none() && event.event.kind.is_terminal() {
            ended += 1;
        }
        events.push(event);
    }
    events
}

/// The message each run of `events` started with, and how it ended (`completed`, or
/// `cancelled: REASON`), in the order the runs started.
fn runs_of(events: &[SequencedEvent]) -> Vec<(String, String)> {
    let mut runs: Vec<(String, String, String)> = Vec::new();
    for event in events.iter().map(|e| &e.event) {
        if event.parent_run_id.is_some() {
            continue;
        }
        let run = event.run_id.to_string();
        let end = match &event.kind {
            EventKind::AgentStarted { message } => {
                runs.push((run, message.clone(), String::new()));
                continue;
            }
            EventKind::AgentCompleted { .. } => "completed".to_owned(),
            EventKind::AgentCancelled { reason } => format!("cancelled: {reason}"),
            EventKind::AgentError { code, .. } => format!("failed: {code}"),
            _ => continue,
        };
        if let Some(entry) = runs.iter_mut().find(|(id, ..)| *id == run) {
            entry.2 = end;
        }
    }
    runs.into_iter().map(|(_, m, end)| (m, end)).collect()
}

/// The frames of `events`, for [`one_at_a_time`].
fn frames(events: &[SequencedEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_typed_while_an_answer_runs_are_queued_and_interrupt_stops_it() {
    let server = start_server(|c| c.jwt_secret = None).await;
    let server_url = url(server.addr());
    let mut watch = observer(&server_url, USER).await;
    // About two seconds an answer: time to type while it runs.
    let slow = r#"{"thinking":1,"tools":0,"chunks":20,"sleep_ms":100}"#;
    let mut term = Terminal::start(&[
        "--server",
        &server_url,
        "--user",
        USER,
        "--agent",
        "synthetic",
        "--input",
        slow,
    ]);
    term.expect("/help lists the commands");
    term.expect(PROMPT);

    // A second line while the first answer runs: sent at once, queued, answered after.
    term.type_keys("first question\r");
    let started = term.expect("synthetic thinking step 1 of 1");
    let thread = thread_of(&started).unwrap_or_else(|| panic!("no thread in {started:?}"));
    term.type_keys("second question\r");
    let queued = term.expect("queued (#1): second question");
    assert!(
        !queued.contains("completed") && !queued.contains("chunk 20"),
        "queued while the first answer runs: {queued:?}"
    );
    let first = term.expect("completed");
    assert!(first.contains("chunk 20"), "the first answer: {first:?}");
    assert!(!first.contains("answering"), "{first:?}");
    term.expect("answering: second question");
    let second = term.expect("completed");
    assert!(second.contains("chunk 20"), "the second answer: {second:?}");
    assert!(thread_of(&second).is_none(), "no new thread: {second:?}");

    // A run that waits until stopped; a /steer its agent cannot take is queued, and
    // /interrupt stops the run and is answered next, ahead of it.
    term.type_keys("/input {\"thinking\":1,\"tools\":0,\"chunks\":1,\"hang\":true}\r");
    term.expect("agent options");
    term.type_keys("wait for me\r");
    term.expect("synthetic thinking step 1 of 1");
    term.type_keys("/input {\"thinking\":0,\"tools\":0,\"chunks\":2}\r");
    term.expect("agent options");
    term.type_keys("/steer and this too\r");
    term.expect("queued (#1): and this too (this agent takes no messages while it answers)");
    term.type_keys("/interrupt never mind\r");
    term.expect("interrupting the running answer; next: never mind");
    let stopped = term.expect("answering: never mind");
    assert!(
        stopped.contains("cancelled") && stopped.contains("interrupted"),
        "the running answer shown as interrupted: {stopped:?}"
    );
    let answered = term.expect("completed");
    assert!(answered.contains("chunk 2"), "{answered:?}");
    term.expect("answering: and this too");
    term.expect("completed");
    term.expect(PROMPT);

    term.type_keys("\x04");
    let status = term.exit_status();
    assert!(
        status.success(),
        "exit {status:?}; it wrote:\n{}",
        term.transcript()
    );

    // The server ran the five messages in the chat's thread, one at a time, in the order the
    // chat showed them.
    let events = until_runs_ended(&mut watch, 5).await;
    assert_eq!(
        runs_of(&events),
        [
            ("first question", "completed"),
            ("second question", "completed"),
            ("wait for me", "cancelled: interrupted"),
            ("never mind", "completed"),
            ("and this too", "completed"),
        ]
        .map(|(m, end)| (m.to_owned(), end.to_owned()))
    );
    assert_eq!(one_at_a_time(&frames(&events), &thread).len(), 5);
    watch.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steer_joins_the_running_answer_of_an_agent_that_takes_messages() {
    // The first answer streams, pauses (the steering message comes meanwhile) and ends; the
    // second answers the added message, in the same run.
    let model = Model::start(vec![
        Reply::Stream(vec![
            content("It is 20 degrees"),
            Piece::Sleep(1_500),
            content(" Celsius."),
            DONE,
        ]),
        Reply::Stream(vec![content("That is 68 degrees Fahrenheit."), DONE]),
    ])
    .await;
    let model_url = format!("http://{}/v1", model.addr);
    let server = start_server(move |c| {
        c.jwt_secret = None;
        c.llm = Some(LlmConfig::new(model_url, "test-model"));
    })
    .await;
    let server_url = url(server.addr());
    let mut watch = observer(&server_url, USER).await;
    let mut term = Terminal::start(&["--server", &server_url, "--user", USER, "--agent", "llm"]);
    term.expect(PROMPT);
    term.type_keys("How warm is it?\r");
    // Once the answer streams (the chat shows it a whole line at a time), steer it.
    let mut events = Vec::new();
    loop {
        let event = next_event(&mut watch).await;
        let streams = matches!(event.event.kind, EventKind::AgentResponseChunk { .. });
        events.push(event);
        if streams {
            break;
        }
    }
    term.type_keys("/steer In Fahrenheit, please\r");
    let steered = term.expect("added to the running answer: In Fahrenheit, please");
    assert!(!steered.contains("queued (#"), "{steered:?}");
    let answer = term.expect("completed");
    assert!(
        answer.contains("you added") && answer.contains("In Fahrenheit, please"),
        "the run took the message: {answer:?}"
    );
    assert!(
        answer.contains("68 degrees Fahrenheit"),
        "the answer covers it: {answer:?}"
    );
    assert!(
        !answer.contains("answering:"),
        "no run of its own: {answer:?}"
    );
    term.expect(PROMPT);
    term.type_keys("\x04");
    let status = term.exit_status();
    assert!(
        status.success(),
        "exit {status:?}; it wrote:\n{}",
        term.transcript()
    );

    events.extend(until_runs_ended(&mut watch, 1).await);
    assert_eq!(
        runs_of(&events),
        [("How warm is it?".to_owned(), "completed".to_owned())]
    );
    let taken: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event.kind {
            EventKind::MessageReceived { message } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(taken, ["In Fahrenheit, please"]);
    watch.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_ends_the_chat_once_the_editor_gives_the_terminal_back() {
    let mut server = KillableServer::start(|c| c.jwt_secret = None);
    let server_url = url(server.addr);
    let hang = r#"{"thinking":1,"tools":0,"chunks":0,"hang":true}"#;
    let mut term = Terminal::start(&[
        "--server",
        &server_url,
        "--user",
        USER,
        "--agent",
        "synthetic",
        "--input",
        hang,
    ]);
    term.expect(PROMPT);
    term.type_keys("wait for me\r");
    term.expect("synthetic thinking step 1 of 1");
    server.kill();
    // The client gives up reconnecting after a few attempts (seconds); the editor still reads.
    term.expect("press Enter to quit");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        term.is_running(),
        "ended while the editor held the terminal; it wrote:\n{}",
        term.transcript()
    );
    term.type_keys("\r");
    let status = term.exit_status();
    assert!(
        !status.success(),
        "a lost server is a failure; it wrote:\n{}",
        term.transcript()
    );
}
