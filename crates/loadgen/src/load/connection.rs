//! One task per socket: it sends the `start_agent` frames the scenario asks for and reads
//! everything the server sends, timing and verifying each event as it arrives.
//!
//! The task owns the socket and its [`StreamVerifier`]; it hands the verifier back when told
//! to close, so the final verdict (every run of the user arrived here) is given once all
//! acceptances are in. At its first violation the task reports it and stops reading.
//!
//! With `--reconnect`, a socket the server dropped is reopened on the next URL with a resume
//! after the last event received (with backoff, for up to [`RECONNECT_FOR`]); the verifier
//! goes on as if nothing happened, so a replay that skipped or repeated an event is caught as
//! any gap is. Requests unanswered when the socket dropped are lost with it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use agent_protocol::{
    ClientFrame, Epoch, ResumeParams, ResumeStatus, ServerFrame, ServerMessage, StartAgent,
};
use core_context::RunId;
use futures::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::connect::{self, Opened, Socket, Target};
use crate::load::shared::{Pending, Shared};
use crate::shape::AGENT;
use crate::verify::{Place, StreamVerifier, Violation};

/// What the scenario asks of a connection.
#[derive(Debug)]
pub enum Command {
    /// Send a `start_agent` with this request id.
    Start(String),
    /// Answer how many runs are open here that the user is not known to have started (their
    /// acceptance may have been lost with a connection: see [`crate::load`]'s end).
    OpenUnconfirmed(tokio::sync::oneshot::Sender<usize>),
    /// Stop and hand back the verifier.
    Close,
}

/// A running connection task.
#[derive(Debug)]
pub struct Connection {
    /// Commands to the task.
    pub commands: mpsc::UnboundedSender<Command>,
    /// The task; it ends with the connection's verifier.
    pub task: tokio::task::JoinHandle<StreamVerifier>,
    /// The user's index.
    pub user: usize,
}

/// How long a dropped connection keeps trying to reconnect (`--reconnect`).
pub const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// What every connection task needs besides its socket.
#[derive(Debug, Clone)]
pub struct Context {
    /// The shared state.
    pub shared: Arc<Shared>,
    /// The `input` of every `start_agent`.
    pub input: Map<String, Value>,
    /// Where and as whom to reconnect a dropped socket (`--reconnect`).
    pub reconnect: Option<Arc<Reconnect>>,
}

/// What reconnecting needs: every server, and each user's token.
#[derive(Debug)]
pub struct Reconnect {
    /// The servers (nodes) of --url.
    pub targets: Vec<Target>,
    /// Each user's token, by user index.
    pub tokens: Vec<String>,
    /// Whether a failed resume is accepted (`--tolerate-failed-resumes`).
    pub tolerate_failed_resumes: bool,
}

/// Starts the task of connection `index` of user `user` on `opened`, a socket to target
/// `target`.
pub fn spawn(
    context: &Context,
    opened: Opened,
    index: usize,
    user: usize,
    target: usize,
) -> Connection {
    let (commands, receiver) = mpsc::unbounded_channel();
    let shared = Arc::clone(&context.shared);
    let place = Place {
        connection: index,
        user: shared.users[user].id.clone(),
    };
    let mut verifier = StreamVerifier::new(place, opened.last_seq, shared.events_per_run);
    if context.reconnect.is_some() {
        verifier = verifier.tolerating_node_loss();
    }
    let task = Task {
        shared,
        input: context.input.clone(),
        reconnect: context.reconnect.clone(),
        index,
        target,
        epoch: opened.epoch,
        user,
        verifier,
        started: HashMap::new(),
        requests: HashSet::new(),
    };
    Connection {
        commands,
        task: tokio::spawn(task.run(opened.socket, receiver)),
        user,
    }
}

struct Task {
    shared: Arc<Shared>,
    input: Map<String, Value>,
    reconnect: Option<Arc<Reconnect>>,
    /// The connection's index (its source address) and its current server.
    index: usize,
    target: usize,
    /// The stream's epoch, for a resume.
    epoch: Epoch,
    user: usize,
    verifier: StreamVerifier,
    /// Runs this connection started, with their request ids.
    started: HashMap<RunId, String>,
    /// Requests sent from here and not yet accepted.
    requests: HashSet<String>,
}

/// How handling one message went.
enum Flow {
    Continue,
    /// The socket is gone, for this reason.
    Dropped(String),
    Stop(Violation),
}

impl Task {
    async fn run(
        mut self,
        mut socket: Socket,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) -> StreamVerifier {
        loop {
            let flow = tokio::select! {
                message = socket.next() => self.on_message(message),
                command = commands.recv() => match command {
                    Some(Command::Start(request_id)) => self.start(&mut socket, request_id).await,
                    Some(Command::OpenUnconfirmed(reply)) => {
                        let user = &self.shared.users[self.user];
                        let open = self
                            .verifier
                            .open_unconfirmed(|run| user.runs.lock().contains(run));
                        let _asker_gone = reply.send(open);
                        Flow::Continue
                    }
                    Some(Command::Close) | None => break,
                },
            };
            let violation = match flow {
                Flow::Continue => continue,
                Flow::Dropped(why) => match self.reopen(why).await {
                    Ok(reopened) => {
                        socket = reopened;
                        continue;
                    }
                    Err(violation) => violation,
                },
                Flow::Stop(violation) => violation,
            };
            self.shared.fail(violation);
            // Keep the verifier for the final report, but stop loading this socket.
            let _closed = commands.recv().await;
            break;
        }
        self.verifier
    }

    /// Reopens a dropped socket on the next server with a resume (`--reconnect`); without
    /// `--reconnect` the drop is a violation.
    async fn reopen(&mut self, why: String) -> Result<Socket, Violation> {
        let Some(reconnect) = self.reconnect.clone() else {
            return Err(self.violation(why));
        };
        let dropped = Instant::now();
        for request_id in std::mem::take(&mut self.requests) {
            self.shared.request_lost(self.user, &request_id);
        }
        let resume = ResumeParams {
            epoch: self.epoch.clone(),
            after_seq: self.verifier.last_seq(),
        };
        let user = self.shared.users[self.user].id.clone();
        let mut pause = Duration::from_millis(50);
        loop {
            self.target = (self.target + 1) % reconnect.targets.len();
            let target = &reconnect.targets[self.target];
            let token = &reconnect.tokens[self.user];
            let opened = connect::open(target, self.index, user.as_str(), token, Some(&resume));
            let failure = match opened.await {
                Ok(opened) => match opened.resume {
                    Some(ResumeStatus::Ok { replayed }) => {
                        let faults = &self.shared.faults;
                        faults.reconnects.fetch_add(1, Ordering::Relaxed);
                        faults
                            .replayed
                            .fetch_add(replayed as u64, Ordering::Relaxed);
                        let took = dropped.elapsed().as_secs_f64() * 1e3;
                        faults.recovery_ms.lock().push(took);
                        self.epoch = opened.epoch;
                        return Ok(opened.socket);
                    }
                    Some(ResumeStatus::Failed { .. }) if reconnect.tolerate_failed_resumes => {
                        let faults = &self.shared.faults;
                        faults.failed_resumes.fetch_add(1, Ordering::Relaxed);
                        let took = dropped.elapsed().as_secs_f64() * 1e3;
                        faults.recovery_ms.lock().push(took);
                        let user_runs = self.shared.users[self.user].runs.lock().clone();
                        for run in self.verifier.reset(opened.last_seq, &user_runs) {
                            self.write_off(&run);
                        }
                        self.epoch = opened.epoch;
                        return Ok(opened.socket);
                    }
                    Some(ResumeStatus::Failed { reason, .. }) => {
                        return Err(Violation::ResumeFailed {
                            place: self.place(),
                            after_seq: resume.after_seq,
                            reason: format!("{reason:?}"),
                        });
                    }
                    None => "the server answered a resume without its outcome".to_owned(),
                },
                Err(e) => e.to_string(),
            };
            if dropped.elapsed() > RECONNECT_FOR {
                return Err(self.violation(format!(
                    "{why}; reconnecting failed for {} s: {failure}",
                    RECONNECT_FOR.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Counts run `run` as delivered here without checking it: a failed resume lost some
    /// of its events (see [`StreamVerifier::reset`]). A run this connection started is over
    /// for the load.
    fn write_off(&mut self, run: &RunId) {
        self.shared
            .faults
            .runs_written_off
            .fetch_add(1, Ordering::Relaxed);
        self.shared.deliveries_done.fetch_add(1, Ordering::Relaxed);
        if let Some(request_id) = self.started.remove(run) {
            self.shared.pending.lock().remove(&request_id);
            self.shared.finished.fetch_add(1, Ordering::Relaxed);
            self.shared.progress.notify_waiters();
        }
    }

    fn place(&self) -> Place {
        self.verifier.place().clone()
    }

    fn violation(&self, problem: String) -> Violation {
        Violation::Protocol {
            place: self.place(),
            problem,
        }
    }

    fn protocol(&self, problem: String) -> Flow {
        Flow::Stop(self.violation(problem))
    }

    async fn start(&mut self, socket: &mut Socket, request_id: String) -> Flow {
        let frame = ClientFrame::start_agent(
            Some(request_id.clone()),
            StartAgent {
                agent: AGENT.to_owned(),
                message: "load".to_owned(),
                thread_id: None,
                input: Some(self.input.clone()),
                multitask: None,
            },
        );
        let now = Instant::now();
        let pending = Pending {
            sent: now,
            place: self.place(),
        };
        self.shared
            .pending
            .lock()
            .insert(request_id.clone(), pending);
        self.requests.insert(request_id);
        self.shared.request_sent(now);
        match socket.send(Message::Text(frame.to_text().into())).await {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Dropped(format!("sending start_agent failed: {e}")),
        }
    }

    fn on_message(
        &mut self,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Flow {
        let received = SystemTime::now();
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                return Flow::Continue;
            }
            Some(Ok(Message::Close(frame))) => {
                return Flow::Dropped(format!("the server closed the connection: {frame:?}"));
            }
            Some(Ok(Message::Binary(_))) => {
                return self.protocol("a binary frame; the protocol has text frames only".into());
            }
            Some(Err(e)) => return Flow::Dropped(format!("the connection failed: {e}")),
            None => return Flow::Dropped("the connection ended without a close frame".into()),
        };
        match ServerMessage::parse(&text) {
            Ok(ServerMessage::Event(event)) => {
                let emitted = event.event.timestamp.as_system_time();
                self.shared.latencies.lock().record(emitted, received);
                self.shared.event_received(Instant::now());
                self.on_event(event)
            }
            Ok(ServerMessage::Frame(frame)) => self.on_frame(frame),
            // No load renames or deletes threads: such a frame is not the load's.
            Ok(ServerMessage::Thread(change)) => self.protocol(format!(
                "a change to thread {} that no load makes",
                change.event.thread_id
            )),
            Ok(ServerMessage::Unknown(frame)) => {
                self.protocol(format!("a frame of unknown type {:?}", frame.kind))
            }
            Err(e) => self.protocol(e.to_string()),
        }
    }

    fn on_event(&mut self, event: core_context::SequencedEvent) -> Flow {
        let user = &self.shared.users[self.user];
        let known = |run: &RunId| user.runs.lock().contains(run);
        match self.verifier.on_event(event, known) {
            Err(violation) => Flow::Stop(violation),
            Ok(None) => Flow::Continue,
            Ok(Some(ended)) if ended.cut => {
                self.write_off(&ended.run_id);
                Flow::Continue
            }
            Ok(Some(ended)) => {
                let faults = &self.shared.faults;
                if ended.node_lost && !known(&ended.run_id) {
                    // Its acceptance was lost with a dropped connection (the verdict at the
                    // end checks the user lost a request for it); no delivery was expected.
                    faults.orphan_deliveries.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.shared.deliveries_done.fetch_add(1, Ordering::Relaxed);
                }
                if ended.node_lost && self.started.contains_key(&ended.run_id) {
                    faults.node_lost_runs.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(request_id) = self.started.remove(&ended.run_id) {
                    self.shared.pending.lock().remove(&request_id);
                    self.shared.finished.fetch_add(1, Ordering::Relaxed);
                    self.shared.progress.notify_waiters();
                }
                Flow::Continue
            }
        }
    }

    fn on_frame(&mut self, frame: ServerFrame) -> Flow {
        match frame {
            ServerFrame::RunAccepted {
                request_id: Some(request_id),
                run_id,
                ..
            } if self.requests.remove(&request_id) => {
                let user = &self.shared.users[self.user];
                user.runs.lock().insert(run_id.clone());
                self.started.insert(run_id, request_id);
                self.shared.accepted.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .deliveries_expected
                    .fetch_add(user.connections, Ordering::Relaxed);
                Flow::Continue
            }
            ServerFrame::RunAccepted { request_id, .. } => self.protocol(format!(
                "run_accepted for request {request_id:?}, which this connection did not send"
            )),
            ServerFrame::Error {
                request_id: Some(request_id),
                code,
                ..
            } if self.reconnect.is_some() && self.requests.remove(&request_id) => {
                // Under faults a start may be refused (Redis unreachable, say): the client is
                // told, which is no loss; it is counted. Refused as `unavailable`, its claim
                // may have reached Redis with the answer lost: a reaper then ends that run
                // `node_lost`, which the user may see without having had it accepted.
                let maybe_started = code == agent_protocol::ErrorCode::Unavailable;
                self.shared
                    .request_refused(self.user, &request_id, maybe_started);
                Flow::Continue
            }
            ServerFrame::Error {
                request_id,
                code,
                message,
                ..
            } => self.protocol(format!(
                "the server refused request {}: {code}: {message} (raise the server's limit \
                 for this scenario)",
                request_id.as_deref().unwrap_or("(none)")
            )),
            ServerFrame::Pong { .. } => Flow::Continue,
            ServerFrame::ConnectionEstablished { .. } => {
                self.protocol("a second connection_established".into())
            }
        }
    }
}
