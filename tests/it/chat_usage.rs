//! `/usage` in `agent-server chat`'s conversation, on a real pseudo-terminal (the harness of
//! `chat_cli`), against a server with a token budget and a scripted model that reports usage:
//! it prints what is used, allowed and left and when the budget resets, before and after
//! runs; a message past the budget is refused with `budget_exceeded` in plain words, and
//! `/usage` then says the budget is used up. The same facts come from `agent_client::usage`.

use llm_agent::LlmConfig;

use crate::approvals::{sqlite, store_dir};
use crate::chat_cli::{PROMPT, Terminal};
use crate::llm::{DONE, Model, Reply, content, usage};
use crate::server_support::{start_server, url};

const USER: &str = "budgeted";

/// An answer that used 1,000 prompt and 500 answer tokens. Each call first reserves its
/// prompt's estimate (some 660 tokens for the `llm` agent's tools and message) and at least a
/// short answer, so the budget below holds two calls and then refuses a third run.
fn answer() -> Reply {
    Reply::Stream(vec![content("ok"), usage(1_000, 500), DONE])
}

/// `2027-01-01T00:00:00Z` as the chat prints it: `2027-01-01 00:00 UTC`.
fn readable(rfc3339: &str) -> String {
    let (date, time) = rfc3339.trim_end_matches('Z').split_once('T').unwrap();
    format!("{date} {} UTC", &time[..5])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_prints_what_is_used_and_a_spent_budget_refuses_plainly() {
    let model = Model::start(vec![answer(), answer(), answer()]).await;
    let model_url = format!("http://{}/v1", model.addr);
    let dir = store_dir();
    let store = sqlite(&dir);
    let server = start_server(move |c| {
        c.jwt_secret = None;
        c.store = Some(store);
        c.start_rate_per_minute = 10_000;
        c.llm = Some(LlmConfig::new(model_url, "test-model"));
        c.budget.tokens = Some(3_000);
    })
    .await;
    let server_url = url(server.addr());

    // The client's own reading of the endpoint: nothing used yet, 3,000 allowed, a monthly period.
    let token = agent_client::get_dev_token(&server_url, USER)
        .await
        .unwrap()
        .token;
    let before = agent_client::usage(&server_url, &token).await.unwrap();
    assert_eq!(before.period, "month");
    assert_eq!(
        (before.tokens.used, before.tokens.limit, before.calls),
        (0, Some(3_000), 0)
    );
    assert!(
        before.resets_at.ends_with("-01T00:00:00Z"),
        "{}",
        before.resets_at
    );
    let resets = readable(&before.resets_at);

    let mut term = Terminal::start(&["--server", &server_url, "--user", USER, "--agent", "llm"]);
    term.expect(PROMPT);
    term.type_keys("/help\r");
    term.expect("/usage              what your messages used this budget period");

    term.type_keys("/usage\r");
    term.expect("Usage this month: 0 of 3,000 tokens used, 3,000 left.");
    term.expect(&format!("0 model calls; the budget resets at {resets}."));

    term.type_keys("first question\r");
    term.expect("completed");
    term.type_keys("/usage\r");
    term.expect("Usage this month: 1,500 of 3,000 tokens used, 1,500 left.");
    term.expect(&format!("1 model call; the budget resets at {resets}."));

    term.type_keys("second question\r");
    term.expect("completed");

    // The budget is spent: the next message is refused, in words, and not sent to the model.
    term.type_keys("third question\r");
    let refused = term.expect("/usage shows what you used.");
    assert!(
        refused.contains("not sent: your token budget for this month is used up: 3000 of 3000"),
        "{refused:?}"
    );
    assert!(
        refused.contains(&format!(
            "it resets at {resets}. Send it again once the budget"
        )),
        "{refused:?}"
    );
    assert!(!refused.contains("(budget_exceeded)"), "{refused:?}");
    term.type_keys("/usage\r");
    term.expect("Usage this month: 3,000 of 3,000 tokens used, 0 left.");
    term.expect(&format!(
        "The budget is used up: new messages are refused until it resets at {resets} (2 model \
         calls)."
    ));
    term.expect(PROMPT);
    term.type_keys("\x04");
    let status = term.exit_status();
    assert!(
        status.success(),
        "exit {status:?}; it wrote:\n{}",
        term.transcript()
    );

    assert_eq!(
        model.requests().len(),
        2,
        "the refused message never reached the model"
    );
    let after = agent_client::usage(&server_url, &token).await.unwrap();
    assert_eq!(
        (after.tokens.used, after.tokens.remaining, after.calls),
        (3_000, Some(0), 2)
    );
    assert!(after.used_up());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_on_a_server_without_a_store_says_why_not() {
    let server = start_server(|c| c.jwt_secret = None).await;
    let server_url = url(server.addr());
    let mut term = Terminal::start(&["--server", &server_url, "--user", USER]);
    term.expect(PROMPT);
    term.type_keys("/usage\r");
    term.expect("cannot show your usage: the server refused with HTTP 404");
    term.expect("this server counts no usage");
    // Ctrl-D once the editor reads again (typed before, the terminal's line discipline takes it).
    term.expect(PROMPT);
    term.type_keys("\x04");
    assert!(term.exit_status().success(), "{}", term.transcript());
    server.shutdown().await;
}
