//! `agent-server chat` and tool calls that wait for approval, against a server that keeps its
//! history in SQLite and holds every `calculator` call for a person: in a conversation the
//! question is asked and `y`, `e` (with arguments typed again until they fit) and `n` (with a
//! reason) each lead to the answer they imply, on a terminal Ctrl-C there cancels the run;
//! the one-shot command prints the waiting call with the commands that decide it and exits
//! with code 3, and running the printed command completes the run.
//!
//! As in `chat_cli`, the child is this test binary run again (`child_process`), with the
//! chat's command line in an environment variable; it exits with the code `agent-server`
//! would. Piped children get their lines on stdin; one runs on a pseudo-terminal.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent_chat::{ChatArgs, EXIT_WAITING_FOR_APPROVAL};
use agent_server::server::RunningServer;
use clap::{Args, FromArgMatches};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

use crate::approvals::{approving, sqlite, store_dir};
use crate::history::TempDir;
use crate::llm::{DONE, Model, Reply, content, tool_piece};
use crate::server_support::{start_server, url};

/// The child's command line after `chat`, one word a line; set only in a child.
const CHILD_ARGV: &str = "AGENT_IT_CHAT_APPROVALS_ARGV";
/// How long a child may take, and how long the test waits for anything it should write.
const WAIT: Duration = Duration::from_secs(30);
const USER: &str = "alice";
/// The question about the assistant's call for "What is 12*7?".
const QUESTION: &str = r#"approve calculator({"expression":"12*7"})? [y]es / [n]o / [e]dit "#;

/// Not a test of its own: the body of the child, `agent-server chat` with the words of
/// [`CHILD_ARGV`], ending the process with the exit code the binary would. Without that
/// variable (a normal run) it has nothing to do.
#[test]
fn child_process() {
    let Ok(argv) = std::env::var(CHILD_ARGV) else {
        return;
    };
    let argv = std::iter::once("chat").chain(argv.lines());
    let matches =
        match ChatArgs::augment_args(clap::Command::new("chat")).try_get_matches_from(argv) {
            Ok(matches) => matches,
            Err(e) => e.exit(),
        };
    let args = ChatArgs::from_arg_matches(&matches).unwrap();
    let outcome = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(agent_chat::run(args));
    let code = match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("agent-server: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code.into());
}

/// The child's command: this binary, its `child_process` only, with `argv`.
fn child(argv: &[&str]) -> (std::path::PathBuf, [&'static str; 5], String) {
    let exe = std::env::current_exe().unwrap();
    let harness = [
        "--exact",
        "chat_approvals::child_process",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ];
    (exe, harness, argv.join("\n"))
}

/// How a piped child ended.
pub(crate) struct Finished {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `agent-server chat` with `argv`, `input` on its stdin (then the end of the input).
pub(crate) async fn chat(argv: &[&str], input: &str) -> Finished {
    let (exe, harness, argv) = child(argv);
    let input = input.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(exe);
        command.args(harness).env(CHILD_ARGV, argv);
        for (name, _) in std::env::vars() {
            if name.starts_with("AGENT_SERVER_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let finished = Finished {
            code: status.and_then(|s| s.code()),
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        };
        assert!(
            status.is_some(),
            "the chat did not end within {WAIT:?}: {finished:?}"
        );
        finished
    })
    .await
    .unwrap()
}

/// A server that holds `calculator` calls for approval, serves dev tokens, and keeps its
/// history (and paused runs) in SQLite under the returned dir; with the `llm` agent on
/// `model`, if given.
async fn approving_server_with(model: Option<&Model>) -> (RunningServer, TempDir, String) {
    let dir = store_dir();
    let tune = approving(&sqlite(&dir), &["calculator"]);
    let llm =
        model.map(|m| llm_agent::LlmConfig::new(format!("http://{}/v1", m.addr), "test-model"));
    let server = start_server(move |config| {
        tune(config);
        config.llm = llm;
        config.jwt_secret = None;
    })
    .await;
    let server_url = url(server.addr());
    (server, dir, server_url)
}

async fn approving_server() -> (RunningServer, TempDir, String) {
    approving_server_with(None).await
}

/// The calls that wait for `USER`, as `run/call`.
async fn waiting(server_url: &str) -> Vec<String> {
    let token = agent_client::get_dev_token(server_url, USER)
        .await
        .unwrap()
        .token;
    agent_client::pending_approvals(server_url, &token)
        .await
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a.run_id, a.tool_call_id))
        .collect()
}

/// A conversation of one message, whose call is asked about `questions` times, answered
/// with `answers` (one a line); then the end of the input, which ends it with exit code 0.
async fn converse(server_url: &str, answers: &str, questions: usize) -> Finished {
    let input = format!("What is 12*7?\n{answers}");
    let finished = chat(&["--server", server_url, "--user", USER], &input).await;
    assert_eq!(finished.code, Some(0), "{finished:?}");
    assert!(
        finished.stdout.contains("> What is 12*7?\n"),
        "{finished:?}"
    );
    assert_eq!(
        finished.stdout.matches(QUESTION).count(),
        questions,
        "{finished:?}"
    );
    finished
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yes_runs_the_tool_and_the_answer_follows() {
    let (server, _dir, server_url) = approving_server().await;
    let finished = converse(&server_url, "y\n", 1).await;
    let out = &finished.stdout;
    let asked = out
        .find(&format!("{QUESTION}y\n"))
        .expect("the question, answered y");
    let answer = out.find("`12*7` = 84.").expect("the answer");
    assert!(asked < answer, "{finished:?}");
    assert!(out[asked..].contains("approve [call_"), "{finished:?}");
    assert!(waiting(&server_url).await.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_runs_the_tool_with_arguments_typed_until_they_fit() {
    let (server, _dir, server_url) = approving_server().await;
    // Not JSON, then not an object: asked again. Then valid JSON the tool's schema refuses:
    // the server says why and the question comes back; an answer that is not one of its
    // choices brings it back once more. Then arguments that fit.
    let answers = "e\n{oops\n[1]\n{\"expression\":5}\nmaybe\ne\n{\"expression\":\"12*8\"}\n";
    let finished = converse(&server_url, answers, 3).await;
    let (out, err) = (&finished.stdout, &finished.stderr);
    assert!(
        err.contains("the arguments is not valid JSON"),
        "{finished:?}"
    );
    assert!(
        err.contains("the arguments must be a JSON object of the tool's arguments"),
        "{finished:?}"
    );
    assert!(
        err.contains("the server refused it:") && err.contains("calculator's schema"),
        "{finished:?}"
    );
    assert!(err.contains(agent_chat_choices()), "{finished:?}");
    assert!(out.contains("`12*8` = 96."), "{finished:?}");
    assert!(!out.contains("= 84"), "{finished:?}");
    server.shutdown().await;
}

/// What the chat says to an answer that is not y, n or e.
fn agent_chat_choices() -> &'static str {
    "answer y (run the tool), n (do not run it) or e (run it with other arguments)"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_with_a_reason_gives_the_agent_the_reason() {
    let (server, _dir, server_url) = approving_server().await;
    let finished = converse(&server_url, "n\nnot now\n", 1).await;
    assert!(
        finished
            .stdout
            .contains("I could not use calculator: a person rejected this call: not now."),
        "{finished:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_prints_the_commands_and_the_printed_command_completes_the_run() {
    let (server, _dir, server_url) = approving_server().await;
    let base = ["--server", server_url.as_str(), "--user", USER];
    let paused = chat(&[&base[..], &["What is 12*7?"][..]].concat(), "").await;
    assert_eq!(
        paused.code,
        Some(EXIT_WAITING_FOR_APPROVAL.into()),
        "{paused:?}"
    );
    let [call] = &waiting(&server_url).await[..] else {
        panic!("one call waits: {paused:?}");
    };
    let prefix = format!("agent-server chat --server {server_url} --user {USER}");
    let approve = format!("    approve: {prefix} --approve {call}\n");
    let reject = format!("    reject:  {prefix} --reject {call}\n");
    let edit =
        format!("    edit:    {prefix} --edit {call} --arguments '{{\"expression\":\"12*7\"}}'\n");
    for line in [&approve, &reject, &edit] {
        assert!(
            paused.stdout.contains(line.as_str()),
            "{line:?} in {paused:?}"
        );
    }
    let run = call.split('/').next().unwrap();
    assert!(
        paused.stdout.contains(&format!(
            "run {run} waits for your approval of 1 tool call:\n  calculator({{\"expression\":\"12*7\"}})  call "
        )),
        "{paused:?}"
    );
    assert!(
        paused.stderr.contains(&format!(
            "agent-server: run {run} waits for your approval of 1 tool call; decide with the commands above (exit code 3)"
        )),
        "{paused:?}"
    );

    // The printed command, word by word: it decides, then follows the run to its answer.
    let words: Vec<&str> = approve
        .trim()
        .strip_prefix("approve: agent-server chat ")
        .unwrap()
        .split(' ')
        .collect();
    let approved = chat(&words, "").await;
    assert_eq!(approved.code, Some(0), "{approved:?}");
    assert!(
        approved
            .stdout
            .contains(&format!("approve [{}]", &call[run.len() + 1..])),
        "{approved:?}"
    );
    assert!(approved.stdout.contains("`12*7` = 84."), "{approved:?}");
    assert!(approved.stdout.contains("completed"), "{approved:?}");
    assert!(waiting(&server_url).await.is_empty());

    // Deciding it again is refused with the server's code, exit code 1.
    let again = chat(&words, "").await;
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(
        again.stderr.contains(&format!(
            "the server refused the decision about {call} (approval_already_decided)"
        )),
        "{again:?}"
    );
    // Bad arguments never reach the server: clap's usage error, exit code 2.
    let bad = chat(
        &[&base[..], &["--edit", call, "--arguments", "{oops"][..]].concat(),
        "",
    )
    .await;
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(
        bad.stderr
            .contains("invalid value '{oops' for '--arguments <JSON>': is not valid JSON"),
        "{bad:?}"
    );
    let bad = chat(&[&base[..], &["--approve", run][..]].concat(), "").await;
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(
        bad.stderr.contains("must be RUN_ID/TOOL_CALL_ID"),
        "{bad:?}"
    );
    server.shutdown().await;
}

/// A model turn calling the calculator for `2+2` and `3*3` (call ids `a` and `b`), then one
/// answering `answer`.
fn two_calls(a: &str, b: &str, answer: &str) -> [Reply; 2] {
    [
        Reply::Stream(vec![
            tool_piece(0, Some(a), Some("calculator"), r#"{"expression":"2+2"}"#),
            tool_piece(1, Some(b), Some("calculator"), r#"{"expression":"3*3"}"#),
            DONE,
        ]),
        Reply::Stream(vec![content(answer), DONE]),
    ]
}

/// The `tool` messages of the model's `n`th request: call id and content.
fn tool_results(model: &Model, n: usize) -> Vec<(String, String)> {
    model.requests()[n].1["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| (m["tool_call_id"].to_string(), m["content"].to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_of_one_model_turn_are_decided_one_after_the_other() {
    let model = Model::start(
        [
            two_calls("call_a", "call_b", "Four; nine skipped."),
            two_calls("call_c", "call_d", "Four; nine not asked."),
        ]
        .concat(),
    )
    .await;
    let (server, _dir, server_url) = approving_server_with(Some(&model)).await;
    let base = [
        "--server",
        server_url.as_str(),
        "--user",
        USER,
        "--agent",
        "llm",
    ];

    // In a conversation: asked about the first call, then about the second.
    let finished = chat(&base, "compute both\ny\nn\nuse mental math\n").await;
    assert_eq!(finished.code, Some(0), "{finished:?}");
    let out = &finished.stdout;
    let first = out
        .find(r#"approve calculator({"expression":"2+2"})? [y]es / [n]o / [e]dit y"#)
        .unwrap_or_else(|| panic!("the first question: {finished:?}"));
    let second = out
        .find(r#"approve calculator({"expression":"3*3"})? [y]es / [n]o / [e]dit n"#)
        .unwrap_or_else(|| panic!("the second question: {finished:?}"));
    assert!(first < second, "{finished:?}");
    assert!(out.contains("Four; nine skipped."), "{finished:?}");
    let results = tool_results(&model, 1);
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results[0].1.contains(r#"\"value\":4"#), "{results:?}");
    assert!(
        results[1]
            .1
            .contains("a person rejected this call: use mental math"),
        "{results:?}"
    );

    // One-shot: both calls are printed; deciding one prints the other, still waiting;
    // deciding that one completes the run.
    let paused = chat(&[&base[..], &["compute both"][..]].concat(), "").await;
    assert_eq!(paused.code, Some(3), "{paused:?}");
    let waiting_calls = waiting(&server_url).await;
    assert_eq!(waiting_calls.len(), 2, "{waiting_calls:?}");
    let (first, second) = (&waiting_calls[0], &waiting_calls[1]);
    assert!(first.ends_with("/call_c") && second.ends_with("/call_d"));
    assert!(paused.stdout.contains("of 2 tool calls:"), "{paused:?}");
    for call in [first, second] {
        assert!(
            paused.stdout.contains(&format!("--approve {call}\n")),
            "{paused:?}"
        );
    }
    let one = chat(&[&base[..4], &["--approve", first][..]].concat(), "").await;
    assert_eq!(one.code, Some(3), "{one:?}");
    assert!(one.stdout.contains("of 1 tool call:"), "{one:?}");
    assert!(
        one.stdout.contains(&format!("--reject {second}\n")),
        "{one:?}"
    );
    assert!(
        !one.stdout.contains(&format!("--reject {first}\n")),
        "{one:?}"
    );
    let two = chat(&[&base[..4], &["--reject", second][..]].concat(), "").await;
    assert_eq!(two.code, Some(0), "{two:?}");
    assert!(two.stdout.contains("Four; nine not asked."), "{two:?}");
    assert!(waiting(&server_url).await.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_editor_asks_and_ctrl_c_there_cancels_the_run() {
    let (server, _dir, server_url) = approving_server().await;
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 40,
            cols: 160,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let (exe, harness, argv) = child(&["--server", &server_url, "--user", USER]);
    let mut command = CommandBuilder::new(exe);
    command.args(harness);
    command.cwd(std::env::current_dir().unwrap());
    for (name, _) in std::env::vars() {
        if name.starts_with("AGENT_SERVER_") || name == "NO_COLOR" {
            command.env_remove(name);
        }
    }
    command.env("TERM", "xterm-256color");
    command.env(CHILD_ARGV, argv);
    let mut child = pty.slave.spawn_command(command).unwrap();
    let mut reader = pty.master.try_clone_reader().unwrap();
    let mut keyboard = pty.master.take_writer().unwrap();
    let (output, screen) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buffer) {
            if output.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut expect = |pattern: &str| {
        let deadline = Instant::now() + WAIT;
        while !seen.contains(pattern) {
            let left = deadline.saturating_duration_since(Instant::now());
            match screen.recv_timeout(left) {
                Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("the chat did not write {pattern:?}; it wrote:\n{seen:?}"),
            }
        }
        let at = seen.find(pattern).unwrap() + pattern.len();
        seen.drain(..at);
    };
    let mut keys = |text: &str| {
        keyboard.write_all(text.as_bytes()).unwrap();
        keyboard.flush().unwrap();
    };

    expect("> ");
    keys("What is 12*7?\r");
    expect(QUESTION);
    keys("y\r");
    expect("84");
    expect("> ");
    keys("What is 12*7?\r");
    expect(QUESTION);
    keys("\x03");
    expect("cancelling run");
    expect("cancelled by the user");
    expect("> ");
    keys("\x04");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the chat did not end");
        while screen.try_recv().is_ok() {}
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit {status:?}");
    assert!(waiting(&server_url).await.is_empty());
    server.shutdown().await;
}
