//! `agent-server chat`'s conversation in a real pseudo-terminal streams: an answer shows as
//! its chunks arrive, above the prompt, while its run is still going; after Ctrl-C the part of
//! the answer that came stays on the screen before "cancelled"; a long answer is wrapped at
//! the terminal's width (a tool's step cut to one line); and `/agent` with a name the server does not run is refused at once,
//! naming the agents it does. Drives the chat through `chat_cli`'s [`Terminal`].

use crate::chat_cli::{DIM, PROMPT, Terminal};
use crate::server_support::{start_server, url};

/// The width of [`Terminal`]'s pty.
const COLUMNS: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_streams_its_answers_and_keeps_a_cancelled_ones_part() {
    let server = start_server(|c| {
        c.jwt_secret = None;
        c.synthetic_agent = true;
    })
    .await;
    let server_url = url(server.addr());
    let mut term = Terminal::start(&["--server", &server_url, "--user", "streamer"]);
    term.expect(PROMPT);

    // An agent the server does not run is refused before any message is sent.
    term.type_keys("/agent nope\r");
    term.expect("there is no agent named \"nope\"; the agents are assistant, synthetic, triage");
    term.expect("(still talking to assistant)");
    term.type_keys("/agent synthetic\r");
    term.expect("talking to synthetic from the next message on");
    term.type_keys(
        "/input {\"thinking\":0,\"tools\":0,\"chunks\":3,\"sleep_ms\":300,\"hang\":true}\r",
    );
    term.expect("agent options");

    // The chunks show while the run goes on: it hangs until cancelled, so each one seen was
    // streamed, not printed at the end.
    term.type_keys("stream to me\r");
    term.expect("chunk 1");
    term.expect("chunk 2");
    let before = term.expect("chunk 3");
    assert!(!before.contains("cancelled"), "{before:?}");
    term.type_keys("\x03");
    let end = term.expect("cancelled by the user");
    // The answer as it stood is on the screen before the cancellation.
    let last_answer = end.rfind("chunk 1 chunk 2 chunk 3");
    assert!(
        last_answer.is_some(),
        "the partial answer before \"cancelled\": {end:?}"
    );
    term.expect(PROMPT);

    // A long answer is wrapped at the terminal's width: no line of it is wider.
    term.type_keys("/agent assistant\r");
    term.expect("talking to assistant");
    term.type_keys("How does resume work?\r");
    let answer = term.expect("completed");
    // The steps too: a tool's step (its result is pages of JSON) is cut to one line.
    assert!(
        answer.contains(&format!("{DIM}+")),
        "dimmed steps: {answer:?}"
    );
    let words = strip_ansi(&answer);
    assert!(words.contains("Connections drop"), "{answer:?}");
    for line in words.split("\r\n") {
        assert!(
            line.chars().count() <= COLUMNS,
            "{} columns: {line:?}",
            line.chars().count()
        );
    }
    term.type_keys("\x04");
    assert!(term.exit_status().success(), "{}", term.transcript());
    server.shutdown().await;
}

/// `text` without ANSI escape sequences, with each line as it ends on the screen: a line
/// cleared (`ESC[2K`) or returned to (`\r`) is started again.
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' && chars.peek() != Some(&'\n') {
            // Back to the line's start: what follows is written over it (the prompt).
            let start = out.rfind('\n').map_or(0, |at| at + 1);
            out.truncate(start);
            continue;
        }
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            let mut code = String::new();
            for d in chars.by_ref() {
                code.push(d);
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            if code == "2K" {
                let start = out.rfind('\n').map_or(0, |at| at + 1);
                out.truncate(start);
            }
        }
    }
    out
}
