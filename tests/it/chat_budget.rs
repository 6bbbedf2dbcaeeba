//! `agent-server chat` and a run that waits for its user's budget (`budget_exhausted`), against
//! a server that keeps its history in SQLite and the scripted model of `budget_waits` (two
//! tool-calling turns of 2,000 tokens each against a plan of 4,010 tokens, so the third call
//! waits). The one-shot command prints the timeline's line, says when the run goes on, where
//! to see it and how to cancel it, and exits with code 4; the printed `--cancel` command ends
//! the run. A conversation, on a pseudo-terminal and from a pipe, reads on while the run
//! waits, `/cancel` ends it, and a run that goes on while the session is open (its user's plan
//! raised) is shown to its answer.
//!
//! The one-shot command and the piped conversation are children as in `chat_approvals` (which
//! exit with the code `agent-server` would), the terminal one as in `chat_cli`.

use agent_chat::EXIT_WAITING_FOR_BUDGET;
use agent_server::server::RunningServer;
use llm_agent::LlmConfig;

use crate::approvals::{sqlite, store_dir};
use crate::budget_waits::{BUDGET, plan, status_becomes, three_turns};
use crate::chat_approvals::chat;
use crate::chat_cli::{PROMPT, Terminal};
use crate::history::TempDir;
use crate::llm::Model;
use crate::server_support::{start_server, url};

/// The timeline's line for the wait, up to the time it resets (the month's first day).
const WAITS: &str = "budget      your token budget is used up (4,000 of 4,010 tokens): the run \
                     waits, and goes on by itself when the budget resets at ";

/// A server with the `llm` agent on `model`, a history in SQLite, and a server-wide budget
/// that the users' plans (their tokens' claims) replace.
async fn server(model: &Model) -> (RunningServer, TempDir, String) {
    let dir = store_dir();
    let store = sqlite(&dir);
    let model_url = format!("http://{}/v1", model.addr);
    let server = start_server(move |config| {
        config.store = Some(store);
        config.llm = Some(LlmConfig::new(model_url, "test-model"));
        config.budget.tokens = Some(100_000);
    })
    .await;
    let server_url = url(server.addr());
    (server, dir, server_url)
}

/// The run id that follows `marker` in `text`.
fn run_after(text: &str, marker: &str) -> String {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {text}"))
        + marker.len();
    text[at..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .unwrap()
        .to_owned()
}

/// The run id of the first "run RUN_ID waits for your budget" in `text`.
fn waiting_run(text: &str) -> String {
    const WAITS_FOR: &str = " waits for your budget";
    let at = text
        .find(WAITS_FOR)
        .unwrap_or_else(|| panic!("{WAITS_FOR:?} in {text}"));
    let run = text[..at]
        .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .unwrap();
    assert!(run.starts_with("run_"), "{run:?} in {text}");
    run.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_exits_4_and_the_printed_command_cancels_the_run() {
    let model = Model::start(three_turns()).await;
    let (server, _dir, server_url) = server(&model).await;
    let token = plan("carol", BUDGET);
    let base = ["--server", server_url.as_str(), "--token", token.as_str()];
    let waited = chat(
        &[&base[..], &["--agent", "llm", "add it up twice"][..]].concat(),
        "",
    )
    .await;
    assert_eq!(
        waited.code,
        Some(EXIT_WAITING_FOR_BUDGET.into()),
        "{waited:?}"
    );
    assert_eq!(EXIT_WAITING_FOR_BUDGET, 4);
    assert!(waited.stdout.contains(WAITS), "{waited:?}");
    // Both tool calls ran before it waited; the third model call was never made.
    assert_eq!(waited.stdout.matches("tool done").count(), 2, "{waited:?}");
    assert_eq!(model.requests().len(), 2);
    let run = waiting_run(&waited.stdout);
    let said = format!(
        "run {run} waits for your budget: it goes on by itself on the server when the budget \
         resets at "
    );
    assert!(waited.stdout.contains(&said), "{waited:?}");
    let see = format!("  see it:    GET {server_url}/v1/runs/{run} (its status and events)\n");
    assert!(waited.stdout.contains(&see), "{waited:?}");
    let cancel = format!("  cancel it: agent-server chat --server {server_url} --cancel {run}\n");
    assert!(waited.stdout.contains(&cancel), "{waited:?}");
    assert!(waited.stdout.contains("--token JWT"), "{waited:?}");
    assert!(
        waited.stderr.contains(&format!(
            "agent-server: run {run} waits for your budget; it goes on by itself on the server"
        )) && waited.stderr.contains("(exit code 4)"),
        "{waited:?}"
    );
    status_becomes(server.addr(), "carol", &run, "waiting_for_budget").await;

    // The printed command, with the token: it cancels the run and follows it to its end.
    let words: Vec<&str> = cancel
        .trim()
        .strip_prefix("cancel it: agent-server chat ")
        .unwrap()
        .split(' ')
        .chain(["--token", token.as_str()])
        .collect();
    let cancelled = chat(&words, "").await;
    assert_eq!(cancelled.code, Some(0), "{cancelled:?}");
    assert!(cancelled.stdout.contains("cancelled   "), "{cancelled:?}");
    assert!(
        cancelled
            .stderr
            .contains(&format!("cancelling run {run}; following it to its end")),
        "{cancelled:?}"
    );
    status_becomes(server.addr(), "carol", &run, "cancelled").await;
    assert_eq!(model.requests().len(), 2, "no call after the wait");

    // Cancelling it again is refused with the server's code, exit code 1.
    let again = chat(&words, "").await;
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(
        again.stderr.contains(&format!(
            "the server refused to cancel run {run} (run_not_found)"
        )),
        "{again:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_conversation_reads_on_and_cancel_ends_the_waiting_run() {
    let model = Model::start(three_turns()).await;
    let (server, _dir, server_url) = server(&model).await;
    let token = plan("dave", BUDGET);
    let mut term = Terminal::start(&["--server", &server_url, "--token", &token, "--agent", "llm"]);
    term.expect(PROMPT);
    term.type_keys("/help\r");
    term.expect("/cancel             cancel the running answer");
    term.type_keys("add it up twice\r");
    term.expect(WAITS);
    let note = term.expect("; /cancel cancels it");
    let run = waiting_run(&note);
    assert!(
        note.contains(&format!(
            "run {run} waits for your budget; type on meanwhile"
        )),
        "{note:?}"
    );
    status_becomes(server.addr(), "dave", &run, "waiting_for_budget").await;
    // The conversation answers while the run waits.
    term.expect(PROMPT);
    term.type_keys("/usage\r");
    term.expect("Usage this month: 4,000 of 4,010 tokens used, 10 left.");
    term.type_keys("/cancel\r");
    term.expect(&format!(
        "cancelling run {run}, which waits for your budget"
    ));
    term.expect("cancelled   ");
    status_becomes(server.addr(), "dave", &run, "cancelled").await;
    term.type_keys("/cancel\r");
    term.expect("there is nothing to cancel");
    term.expect(PROMPT);
    term.type_keys("\x04");
    let status = term.exit_status();
    assert!(status.success(), "exit {status:?}:\n{}", term.transcript());
    assert!(
        !term.transcript().contains("still waits for your budget"),
        "{}",
        term.transcript()
    );
    assert_eq!(model.requests().len(), 2, "no call after the wait");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_that_goes_on_while_the_conversation_is_open_is_shown_to_its_answer() {
    let model = Model::start(three_turns()).await;
    let (server, _dir, server_url) = server(&model).await;
    let token = plan("erin", BUDGET);
    let mut term = Terminal::start(&["--server", &server_url, "--token", &token, "--agent", "llm"]);
    term.expect(PROMPT);
    term.type_keys("add it up twice\r");
    term.expect(WAITS);
    let note = term.expect("; /cancel cancels it");
    let run = waiting_run(&note);
    status_becomes(server.addr(), "erin", &run, "waiting_for_budget").await;

    // Her identity provider raises her plan: her next request brings it, and the run goes on.
    let raised = crate::support::http_client()
        .get(format!("{server_url}/v1/me/usage"))
        .bearer_auth(plan("erin", 100_000))
        .send()
        .await
        .unwrap();
    assert_eq!(raised.status().as_u16(), 200);
    term.expect(&format!("run {run} goes on: your budget allows it again"));
    term.expect("four, twice");
    term.expect("completed");
    status_becomes(server.addr(), "erin", &run, "completed").await;
    term.expect(PROMPT);
    term.type_keys("\x04");
    let status = term.exit_status();
    assert!(status.success(), "exit {status:?}:\n{}", term.transcript());
    assert_eq!(model.requests().len(), 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_pipe_the_next_line_is_read_while_the_run_waits() {
    let model = Model::start(three_turns()).await;
    let (server, _dir, server_url) = server(&model).await;
    let token = plan("frank", BUDGET);
    let argv = ["--server", &server_url, "--token", &token, "--agent", "llm"];
    // Were the wait read as an answer still running, `/cancel` would never be read and the
    // chat would not end.
    let finished = chat(&argv, "add it up twice\n/cancel\n").await;
    assert_eq!(finished.code, Some(0), "{finished:?}");
    let out = &finished.stdout;
    let waits = out.find(WAITS).expect("the wait's line");
    let cancel = out.find("> /cancel\n").expect("the next line read");
    let cancelled = out.find("cancelled   ").expect("the run's end");
    assert!(waits < cancel && cancel < cancelled, "{finished:?}");
    let run = run_after(&finished.stderr, "cancelling run ");
    assert!(
        finished.stderr.contains(&format!(
            "cancelling run {run}, which waits for your budget"
        )),
        "{finished:?}"
    );
    assert!(
        !finished.stderr.contains("still waits for your budget"),
        "{finished:?}"
    );
    status_becomes(server.addr(), "frank", &run, "cancelled").await;
    server.shutdown().await;
}
