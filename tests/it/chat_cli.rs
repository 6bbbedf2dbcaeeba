//! `agent-server chat`'s conversation mode in a real pseudo-terminal, driven as a user types:
//! a question and its answer (with the steps dimmed), a follow-up in the same thread, Ctrl-C
//! at the prompt, Ctrl-C cancelling a running answer and the prompt coming back, and Ctrl-D
//! ending the session with exit code 0.
//!
//! The `agent-server` binary is not built for integration tests, so, as in `config`, this test
//! binary runs itself again as the child (see `child_process`), with the chat's command line in
//! an environment variable; here the child's stdin, stdout and stderr are a pty's, so it sees
//! a terminal. The test reads the other end with a deadline for each thing it waits for, and
//! checks the server's side through a second client of the same user. `chat_multitask` drives
//! the chat through the same [`Terminal`].

use std::io::{Read as _, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent_chat::ChatArgs;
use agent_protocol::EventKind;
use clap::{Args, FromArgMatches};
use portable_pty::{Child, CommandBuilder, ExitStatus, MasterPty, PtySize, native_pty_system};

use crate::server_support::{next_event, start_server, url};

/// The child's command line after `chat`, one word a line; set only in a child.
const CHILD_ARGV: &str = "AGENT_IT_CHAT_CHILD_ARGV";
/// How long the test waits for any one thing the child should write.
pub(crate) const WAIT: Duration = Duration::from_secs(20);
/// The chat's prompt.
pub(crate) const PROMPT: &str = "> ";
/// ANSI dim, which the conversation's step lines start with on a terminal.
pub(crate) const DIM: &str = "\x1b[2m";
const USER: &str = "pty-user";

/// Not a test of its own: the body of the child that [`Terminal::start`] starts (this binary
/// again, this test only), `agent-server chat` with the words of [`CHILD_ARGV`]. Without that
/// variable (a normal run) it has nothing to do.
#[test]
fn child_process() {
    let Ok(argv) = std::env::var(CHILD_ARGV) else {
        return;
    };
    let argv = std::iter::once("chat").chain(argv.lines());
    let matches = ChatArgs::augment_args(clap::Command::new("chat"))
        .try_get_matches_from(argv)
        .unwrap();
    let args = ChatArgs::from_arg_matches(&matches).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(agent_chat::run(args))
        .unwrap();
}

/// The child on a pseudo-terminal: what it writes, read as it comes, and what is typed to it.
pub(crate) struct Terminal {
    child: Box<dyn Child + Send + Sync>,
    keyboard: Box<dyn Write + Send>,
    screen: mpsc::Receiver<Vec<u8>>,
    /// Read and not yet matched by [`expect`](Terminal::expect).
    unread: Vec<u8>,
    /// Everything read, for the message of a failure.
    transcript: Vec<u8>,
    _master: Box<dyn MasterPty + Send>,
}

impl Terminal {
    /// Starts `agent-server chat` with `argv` on a new 40x120 pty.
    pub(crate) fn start(argv: &[&str]) -> Self {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 40,
                cols: 120,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut command = CommandBuilder::new(std::env::current_exe().unwrap());
        command.args([
            "--exact",
            "chat_cli::child_process",
            "--nocapture",
            "--test-threads=1",
        ]);
        command.cwd(std::env::current_dir().unwrap());
        for (name, _) in std::env::vars() {
            if name.starts_with("AGENT_SERVER_") || name == "NO_COLOR" {
                command.env_remove(name);
            }
        }
        command.env("TERM", "xterm-256color");
        command.env(CHILD_ARGV, argv.join("\n"));
        let child = pty.slave.spawn_command(command).unwrap();
        let mut reader = pty.master.try_clone_reader().unwrap();
        let (output, screen) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            // Ends when the child is gone (EIO) or the test is (the channel closes).
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                if output.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Terminal {
            child,
            keyboard: pty.master.take_writer().unwrap(),
            screen,
            unread: Vec::new(),
            transcript: Vec::new(),
            _master: pty.master,
        }
    }

    /// Types `keys` (`\r` is Enter, `\x03` Ctrl-C, `\x04` Ctrl-D).
    pub(crate) fn type_keys(&mut self, keys: &str) {
        self.keyboard.write_all(keys.as_bytes()).unwrap();
        self.keyboard.flush().unwrap();
    }

    /// Reads until the child has written `pattern`; returns what it wrote up to and with it.
    /// Fails after [`WAIT`], showing everything read.
    pub(crate) fn expect(&mut self, pattern: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = find(&self.unread, pattern.as_bytes()) {
                let rest = self.unread.split_off(at + pattern.len());
                let seen = std::mem::replace(&mut self.unread, rest);
                return String::from_utf8_lossy(&seen).into_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.screen.recv_timeout(left) {
                Ok(bytes) => {
                    self.unread.extend_from_slice(&bytes);
                    self.transcript.extend_from_slice(&bytes);
                }
                Err(_) => panic!(
                    "the chat did not write {pattern:?} within {WAIT:?}; it wrote:\n{}",
                    self.transcript()
                ),
            }
        }
    }

    /// Whether the child is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How the child ended, within [`WAIT`].
    pub(crate) fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the chat did not end within {WAIT:?}; it wrote:\n{}",
                self.transcript()
            );
            // Keep reading, so a child writing on its way out is never blocked.
            if let Ok(bytes) = self.screen.recv_timeout(Duration::from_millis(50)) {
                self.transcript.extend_from_slice(&bytes);
            }
        }
    }

    /// Everything read so far, with escape codes visible.
    pub(crate) fn transcript(&self) -> String {
        format!("{:?}", String::from_utf8_lossy(&self.transcript)).replace("\\r\\n", "\\r\\n\n")
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The thread id in the chat's note about a new thread (`thread thr_…; later messages …`).
pub(crate) fn thread_of(text: &str) -> Option<String> {
    let start = text.find("thread thr_")? + "thread ".len();
    let id = &text[start..];
    let len = id
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(id.len());
    Some(id[..len].to_owned())
}

/// The lines of `text` that are the answer: not dimmed steps, not the chat's notes.
fn answer_lines(text: &str) -> Vec<&str> {
    text.split("\r\n")
        .filter(|line| !line.contains(DIM) && !line.contains("thread thr_"))
        .filter(|line| !line.contains(PROMPT) && !line.trim().is_empty())
        .collect()
}

/// Whether `line` is dimmed and starts with the step's time since the run was accepted,
/// `+1.234s`: its value depends on the machine's load, so only its form is checked.
fn dimmed_step_time(line: &str) -> bool {
    let Some((_, rest)) = line.split_once(&format!("{DIM}+")) else {
        return false;
    };
    let Some((time, _)) = rest.split_once("s ") else {
        return false;
    };
    time.split_once('.').is_some_and(|(secs, millis)| {
        !secs.is_empty()
            && secs.bytes().all(|b| b.is_ascii_digit())
            && millis.len() == 3
            && millis.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The lines of `text` that are steps of `label` (`thinking`, `tool`, ...).
fn step_lines<'a>(text: &'a str, label: &str) -> Vec<&'a str> {
    text.split("\r\n")
        .filter(|line| line.contains(&format!("  {label} ")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_in_a_terminal() {
    let server = start_server(|c| c.jwt_secret = None).await;
    let server_url = url(server.addr());
    // The same user's stream as another client sees it: the server's side of the story.
    let token = agent_client::get_dev_token(&server_url, USER)
        .await
        .unwrap()
        .token;
    let mut observer = agent_client::Client::connect(&server_url, &token)
        .await
        .unwrap();

    let mut term = Terminal::start(&["--server", &server_url, "--user", USER]);
    term.expect("/help lists the commands");
    term.expect(PROMPT);

    term.type_keys("What is 2+2?\r");
    let first = term.expect("completed");
    let thread = thread_of(&first).unwrap_or_else(|| panic!("no thread in {first:?}"));
    let thinking = step_lines(&first, "thinking");
    assert!(!thinking.is_empty(), "{first:?}");
    for line in thinking {
        assert!(dimmed_step_time(line), "a dimmed step: {line:?}");
    }
    let answer = answer_lines(&first);
    assert!(
        answer.iter().any(|l| l.contains('4')),
        "{answer:?} in {first:?}"
    );
    term.expect(PROMPT);

    term.type_keys("And what is 3+3?\r");
    let second = term.expect("completed");
    assert!(thread_of(&second).is_none(), "no new thread: {second:?}");
    let answer = answer_lines(&second);
    assert!(
        answer.iter().any(|l| l.contains('6')),
        "{answer:?} in {second:?}"
    );
    term.expect(PROMPT);

    // Ctrl-C at the prompt clears the line: nothing is sent.
    term.type_keys("never sent");
    term.type_keys("\x03");
    term.expect(PROMPT);

    term.type_keys("/agent synthetic\r");
    term.expect("talking to synthetic");
    term.expect(PROMPT);
    term.type_keys("/input {\"thinking\":1,\"tools\":0,\"chunks\":0,\"hang\":true}\r");
    term.expect("agent options");
    term.expect(PROMPT);
    term.type_keys("wait for me\r");
    term.expect("synthetic thinking step 1 of 1");
    // The run waits until cancelled: Ctrl-C cancels it, and the conversation goes on.
    term.type_keys("\x03");
    term.expect("cancelling run");
    term.expect("cancelled by the user");
    term.expect(PROMPT);

    term.type_keys("\x04");
    let status = term.exit_status();
    assert!(
        status.success(),
        "exit {status:?}; it wrote:\n{}",
        term.transcript()
    );

    // The server ran exactly the three messages, all in the thread the chat printed, and the
    // last one was cancelled.
    let mut runs = Vec::new();
    let mut ends = Vec::new();
    while ends.len() < 3 {
        let event = next_event(&mut observer).await.event;
        if event.parent_run_id.is_some() {
            continue;
        }
        match &event.kind {
            EventKind::AgentStarted { message } => {
                runs.push((message.clone(), event.thread_id.to_string()));
            }
            EventKind::AgentCompleted { .. } => ends.push("completed"),
            EventKind::AgentError { .. } => ends.push("failed"),
            EventKind::AgentCancelled { .. } => ends.push("cancelled"),
            _ => {}
        }
    }
    let expected: Vec<(String, String)> = ["What is 2+2?", "And what is 3+3?", "wait for me"]
        .iter()
        .map(|m| ((*m).to_owned(), thread.clone()))
        .collect();
    assert_eq!(runs, expected);
    assert_eq!(ends, ["completed", "completed", "cancelled"]);
    observer.close().await;
}
