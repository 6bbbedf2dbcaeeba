//! `agent-server chat` without a message: a conversation in one thread.
//!
//! Each line typed is a `start_agent` in the same thread (the first run's thread, or the one
//! `--thread` names), followed like the one-shot command's run but laid out as a chat: the
//! answer as a message, the steps dimmed. On a terminal the next line can be typed while an
//! answer runs ("double texting"): it is sent at once, with `multitask` `enqueue`, the server
//! queues it behind the answers before it ("queued (#1): ..."), and its answer follows theirs.
//! `/interrupt MESSAGE` stops the running answer and answers MESSAGE instead (`interrupt`);
//! `/steer MESSAGE` adds MESSAGE to the running answer (`steer`; queued when the agent takes
//! no messages while it answers). `runs` keeps track of them. From a pipe or a file the lines
//! are a script: each is read once the answers before it have ended, so that an answer to a
//! tool call's question reaches the question.
//!
//! The session outlives what happens to one run: a refusal, a failure or a cancellation is
//! said in plain words and the conversation goes on. Only a lost server ends it (with the
//! error), and Ctrl-D or the end of the input (exit code 0).
//!
//! Ctrl-C while an answer runs cancels that run; a second one stops waiting for it (with none
//! running, a Ctrl-C stops waiting for the queued ones). Ctrl-C at an idle prompt clears the
//! line (in a pipe, where there is no line to clear, it ends the input). A run that asks for
//! approval of a tool call is asked about (`ask`), one call after the other, and goes on once
//! decided. A few commands start with `/` (`command`): `/help` lists them; `/usage` prints what
//! the user's runs spent this budget period (`usage`). A message refused because the budget is
//! used up (`budget_exceeded`) is said plainly, with when it resets.
//!
//! A run that waits for the user's budget (`budget_exhausted`) may wait for weeks: its line is
//! printed and the conversation reads on (in a pipe, the next line), keeping the run among
//! those that wait (`runs`). It is shown again if it goes on while the session is open, and
//! `/cancel` ends it (with no answer running; otherwise `/cancel` cancels that one, as Ctrl-C
//! does). Leaving the session says how to see it later and how to cancel it.

use agent_client::{Client, ClientError};
use agent_protocol::{ErrorCode, StartAgent};
use core_context::approval::PendingCall;
use core_context::multitask::Multitask;
use core_context::{RunId, ThreadId};
use serde_json::{Map, Value};
use tokio::time::MissedTickBehavior;

use crate::approval::{Invocation, listing};
use crate::args::ChatArgs;
use crate::ask::{Asked, ask};
use crate::command::{Command, HELP};
use crate::error::ChatError;
use crate::follow::{CtrlC, TICK, accepted_frame, cancel};
use crate::prompt::{Line, Lines};
use crate::runs::{Runs, Shown};
use crate::terminal::{Caps, Output};
use crate::timeline::Look;
use crate::usage::{budget_refusal, usage_text};

/// The editor's prompt.
const PROMPT: &str = "> ";

/// Said once, when the conversation starts.
const WELCOME: &str = "Type a message and press Enter, also while an answer runs (it is queued); \
                       Ctrl-C cancels a running answer, Ctrl-D quits, /help lists the commands.";

/// What a second Ctrl-C during a run does.
const AGAIN: &str = "stop waiting for it";

/// Whether the conversation goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Next,
    Quit,
}

/// The conversation: what the next message is sent with, the runs it shows, and where output
/// goes.
struct Conversation<'a> {
    args: &'a ChatArgs,
    token: &'a str,
    agent: String,
    input: Option<Map<String, Value>>,
    thread: Option<ThreadId>,
    runs: Runs,
    out: Output,
}

/// Runs the conversation on `client` until Ctrl-D, the end of the input, or a lost server.
/// `token` is the one the client connected with (for `/approvals` and `/usage`, over HTTP).
pub(crate) async fn converse(
    client: &mut Client,
    args: &ChatArgs,
    token: &str,
) -> Result<(), ChatError> {
    let caps = Caps::detect();
    let look = Look {
        conversation: true,
        ansi: caps.ansi && !args.json,
        width: crate::terminal::columns().unwrap_or(0),
    };
    let mut chat = Conversation {
        args,
        token,
        agent: args.agent.clone(),
        input: args.input.clone(),
        thread: args.thread.clone(),
        runs: Runs::new(look),
        out: Output::terminal(args.json, caps),
    };
    let mut lines = Lines::open(PROMPT).await?;
    // Before the editor's first prompt is up: written at once, it comes first.
    chat.out.note(WELCOME);
    chat.out.set_above(lines.above());
    let outcome = chat.talk(client, &mut lines).await;
    if !chat.runs.is_idle()
        && let Some(thread) = &chat.thread
    {
        chat.out.note(&format!(
            "the answers running or queued go on on the server, in thread {thread}"
        ));
    }
    let how = Invocation::of(args);
    for run in chat.runs.waiting() {
        chat.out.note(&format!(
            "run {run} still waits for your budget; it goes on by itself on the server. GET {} \
             shows it, {} cancels it",
            how.http(&format!("v1/runs/{run}")),
            how.command(&["--cancel", run.as_str()])
        ));
    }
    if let Err(e) = &outcome
        && lines.is_terminal()
        && lines.waiting().is_some()
    {
        // The editor holds the terminal in raw mode until it gives its line back: the
        // process must not end and leave the terminal so.
        chat.out.note(&format!("{e}; press Enter to quit"));
        // Whatever comes (a line, Ctrl-C, Ctrl-D, a failure to read), the editor is done.
        let _ = lines.next().await;
    }
    chat.out.settle();
    outcome
}

impl Conversation<'_> {
    /// Reads lines and shows the runs' events, whichever comes first, until the conversation
    /// ends.
    async fn talk(&mut self, client: &mut Client, lines: &mut Lines) -> Result<(), ChatError> {
        let terminal = lines.is_terminal();
        // On a terminal the editor turns a Ctrl-C into a cleared line; the signal comes only
        // between two lines. In a pipe it is the only Ctrl-C there is.
        let mut ctrl_c = CtrlC::listen();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            let reading = terminal || self.runs.is_idle();
            let status = self.out.has_status() && self.runs.current().is_some();
            let flow = tokio::select! {
                // The line first: its request must reach the editor at once, so that its prompt
                // is up (and the keys typed are its) while the events of a busy run are shown.
                biased;
                line = lines.next(), if reading => match line? {
                    Line::Text(line) => self.line(client, lines, &line).await?,
                    Line::Cleared => self.ctrl_c(client, terminal).await?,
                    Line::End => Flow::Quit,
                },
                item = client.next_item() => match item {
                    None => return Err(ClientError::Closed.into()),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(item)) => match self.runs.show(&item, &mut self.out)? {
                        Some(Shown::Paused(call)) => self.paused(client, lines, &call).await?,
                        Some(Shown::WaitsForBudget(run)) => self.waits_for_budget(&run),
                        Some(Shown::Ended) | None => Flow::Next,
                    },
                },
                () = ctrl_c.pressed() => self.ctrl_c(client, terminal).await?,
                _ = ticker.tick(), if status => {
                    if let Some(current) = self.runs.current() {
                        self.out.show_status(&current.view.status());
                    }
                    Flow::Next
                }
            };
            if flow == Flow::Quit {
                return Ok(());
            }
        }
    }

    /// A line typed: a message to send, or a command.
    async fn line(
        &mut self,
        client: &Client,
        lines: &mut Lines,
        line: &str,
    ) -> Result<Flow, ChatError> {
        if !lines.is_terminal() && !self.out.json && !line.trim().is_empty() {
            // The input is not on the screen: the transcript shows what was asked.
            self.out.text(&format!("{PROMPT}{line}\n"))?;
        }
        match Command::parse(line) {
            Command::Empty => {}
            Command::Say(message, multitask) => {
                // The next line can be typed while this one is sent.
                lines.ask_next();
                self.send(client, message, multitask).await?;
            }
            Command::Approvals => self.approvals().await,
            Command::Usage => self.usage().await,
            Command::Agent(name) => self.agent(name).await,
            Command::Cancel => self.cancel(client).await?,
            Command::Quit => return Ok(Flow::Quit),
            Command::NewThread if !self.runs.is_idle() => self.out.note(
                "/new waits until no answer runs or is queued in this thread: wait for them, \
                 or press Ctrl-C to cancel the running one",
            ),
            command => self.command(command),
        }
        Ok(Flow::Next)
    }

    /// Sends `message` into the thread with `multitask`, and says what became of it.
    async fn send(
        &mut self,
        client: &Client,
        message: &str,
        multitask: Multitask,
    ) -> Result<(), ChatError> {
        let request = StartAgent {
            agent: self.agent.clone(),
            message: message.to_owned(),
            thread_id: self.thread.clone(),
            input: self.input.clone(),
            multitask: Some(multitask),
        };
        let accepted = match client.start(request).await {
            Ok(accepted) => accepted,
            Err(ClientError::Server {
                code: ErrorCode::BudgetExceeded,
                message,
            }) => {
                self.out.note(&budget_refusal(&message));
                return Ok(());
            }
            Err(ClientError::Server { code, message }) => {
                self.out.note(&format!("not sent: {message} ({code})"));
                return Ok(());
            }
            Err(
                e @ (ClientError::NotConnected
                | ClientError::ConnectionLost
                | ClientError::Timeout { .. }),
            ) => {
                self.out.note(&format!("not sent: {e}"));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.out.raw(&accepted_frame(&accepted))?;
        if self.thread.as_ref() != Some(&accepted.thread_id) {
            self.out.note(&format!(
                "thread {thread}; later messages continue it (another session can with --thread {thread})",
                thread = accepted.thread_id
            ));
            self.thread = Some(accepted.thread_id.clone());
        }
        if let Some(said) = self.runs.accepted(&accepted, message, multitask) {
            self.out.note(&said);
        }
        Ok(())
    }

    /// Ctrl-C: cancels the run shown, or stops waiting for it once cancelled; with none shown,
    /// stops waiting for the runs queued; with none either, nothing on a terminal (the editor
    /// cleared the line) and the end of the input in a pipe.
    async fn ctrl_c(&mut self, client: &Client, terminal: bool) -> Result<Flow, ChatError> {
        if let Some(current) = self.runs.current() {
            if !current.view.cancel_sent() {
                cancel(
                    client,
                    &current.run,
                    &mut current.view,
                    &mut self.out,
                    AGAIN,
                )
                .await?;
                return Ok(Flow::Next);
            }
            self.out.text(&current.view.timeline.flush())?;
            if let Some(run) = self.runs.drop_current() {
                self.out.note(&format!(
                    "stopped waiting for run {run}; it may still be running on the server"
                ));
            }
            return Ok(Flow::Next);
        }
        match self.runs.forget() {
            0 if terminal => Ok(Flow::Next),
            0 => Ok(Flow::Quit),
            n => {
                self.out.note(&format!(
                    "stopped waiting for {n} queued message{}; the server still answers them",
                    if n == 1 { "" } else { "s" }
                ));
                Ok(Flow::Next)
            }
        }
    }

    /// The run shown asks for approval of `call`: asks the person, and sends the decision (or
    /// cancels the run).
    async fn paused(
        &mut self,
        client: &Client,
        lines: &mut Lines,
        call: &PendingCall,
    ) -> Result<Flow, ChatError> {
        let Some(current) = self.runs.current() else {
            return Ok(Flow::Next);
        };
        let run = current.run.clone();
        match ask(client, lines, &mut self.out, &run, call).await? {
            Asked::Decided => {}
            Asked::Cancel => {
                if let Some(current) = self.runs.current() {
                    cancel(client, &run, &mut current.view, &mut self.out, AGAIN).await?;
                }
            }
            Asked::Quit => {
                self.out.note(&format!(
                    "run {run} still waits for your approval; decide it later with {} \
                     (or --reject, or --edit with --arguments JSON)",
                    Invocation::of(self.args)
                        .command(&["--approve", &format!("{run}/{}", call.tool_call_id)])
                ));
                return Ok(Flow::Quit);
            }
        }
        Ok(Flow::Next)
    }

    /// The run shown waits for the user's budget (its line was printed): the conversation
    /// goes on.
    fn waits_for_budget(&mut self, run: &RunId) -> Flow {
        self.out.note(&format!(
            "run {run} waits for your budget; type on meanwhile (messages in this thread wait \
             behind it, /new starts another thread); /cancel cancels it"
        ));
        Flow::Next
    }

    /// `/cancel`: cancels the run shown, as Ctrl-C does; with none, the runs that wait for the
    /// budget.
    async fn cancel(&mut self, client: &Client) -> Result<(), ChatError> {
        if let Some(current) = self.runs.current() {
            if current.view.cancel_sent() {
                self.out.note(&format!(
                    "run {} is being cancelled; Ctrl-C stops waiting for it",
                    current.run
                ));
                return Ok(());
            }
            return cancel(
                client,
                &current.run,
                &mut current.view,
                &mut self.out,
                AGAIN,
            )
            .await;
        }
        let waiting = self.runs.waiting();
        if waiting.is_empty() {
            self.out
                .note("no answer runs or waits for your budget: there is nothing to cancel");
        }
        for run in waiting {
            match client.cancel_run(&run).await {
                Ok(()) => {
                    self.runs.cancel_sent(&run);
                    self.out.note(&format!(
                        "cancelling run {run}, which waits for your budget"
                    ));
                }
                Err(ClientError::Server {
                    code: ErrorCode::RunNotFound,
                    message,
                }) => {
                    self.runs.let_go(&run);
                    self.out.note(&format!(
                        "run {run} no longer waits: {message} (run_not_found)"
                    ));
                }
                Err(ClientError::Server { code, message }) => self.out.note(&format!(
                    "the server refused to cancel run {run}: {message} ({code})"
                )),
                Err(
                    e @ (ClientError::NotConnected
                    | ClientError::ConnectionLost
                    | ClientError::Timeout { .. }),
                ) => self.out.note(&format!("not sent: {e}")),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// `/approvals`: the calls that wait for the user, in any thread.
    async fn approvals(&mut self) {
        let said = match agent_client::pending_approvals(&self.args.server, self.token).await {
            Ok(all) => listing(&all, &Invocation::of(self.args)),
            Err(e) => format!("cannot list the approvals: {e}"),
        };
        self.out.note(said.trim_end());
    }

    /// `/usage`: what the user's runs spent this budget period, and what the budget allows.
    async fn usage(&mut self) {
        let said = match agent_client::usage(&self.args.server, self.token).await {
            Ok(usage) => usage_text(&usage),
            Err(e) => format!("cannot show your usage: {e}"),
        };
        self.out.note(&said);
    }

    /// `/agent [NAME]`: with a name the server runs, talks to that agent from the next
    /// message on; another name is refused at once with the names of the agents there are.
    /// Without one, says which agent it talks to and which there are.
    async fn agent(&mut self, name: Option<&str>) {
        let listed = agent_client::agents(&self.args.server).await;
        let names = |agents: &[agent_client::AgentListing]| {
            agents
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let said = match (name, listed) {
            (None, Ok(agents)) => {
                format!(
                    "talking to {}; the agents are {}",
                    self.agent,
                    names(&agents)
                )
            }
            (None, Err(_)) => format!("talking to {}", self.agent),
            (Some(name), Ok(agents)) if !agents.iter().any(|a| a.name == name) => format!(
                "there is no agent named {name:?}; the agents are {} (still talking to {})",
                names(&agents),
                self.agent
            ),
            (Some(name), listed) => {
                self.agent = name.to_owned();
                match listed {
                    Ok(_) => format!("talking to {name} from the next message on"),
                    // The server is asked again when the message is sent.
                    Err(e) => format!(
                        "talking to {name} from the next message on (the server's agents could \
                         not be listed: {e})"
                    ),
                }
            }
        };
        self.out.note(&said);
    }

    /// A command other than a message.
    fn command(&mut self, command: Command<'_>) {
        let said = match command {
            Command::Help => HELP.to_owned(),
            Command::Input(None) => {
                self.input = None;
                "no agent options".to_owned()
            }
            Command::Input(Some(input)) => {
                let said = format!("agent options {}", Value::Object(input.clone()));
                self.input = Some(input);
                said
            }
            Command::NewThread => {
                self.thread = None;
                "the next message starts a new thread".to_owned()
            }
            Command::Wrong(why) => why,
            Command::Empty
            | Command::Agent(_)
            | Command::Say(..)
            | Command::Approvals
            | Command::Usage
            | Command::Cancel
            | Command::Quit => return,
        };
        self.out.note(&said);
    }
}
