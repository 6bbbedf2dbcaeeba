//! [`Client`]: one user's connection to the server, as an application holds it; and
//! [`ClientHandle`], the part that makes requests, for other tasks.
//!
//! A `Client` owns a background task (see `driver`) that owns the socket. The client reads the
//! stream ([`Client::next_item`]); requests go through the task and wait for their answers, so
//! any number of tasks can make requests at once through clones of the handle while one task
//! reads the stream. Dropping the client stops the task and closes the socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_protocol::{ResolveApproval, ResumeParams, StartAgent};
use core_context::approval::Decision;
use core_context::{RunId, UserId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::ClientConfig;
use crate::connect::{self, Endpoint};
use crate::driver::{Backlog, Command, Delivery, Driver};
use crate::error::ClientError;
use crate::requests::{Reply, Request};
use crate::sequence::{Established, Joined, Sequencer};
use crate::stream::{RunAccepted, StreamItem};
use crate::url::ServerUrl;

/// Requests the application may have waiting for the connection task at once.
const COMMAND_QUEUE: usize = 64;

/// A connection to the server for one user: requests, and the user's event stream, kept
/// going across dropped sockets.
///
/// Every event of the user's stream comes out of [`next_item`](Client::next_item) exactly
/// once and in `seq` order. When the socket drops, the client reconnects with backoff and
/// resumes where it was; if the server can no longer replay what was missed, a
/// [`Notice`](crate::Notice) says so and the stream continues from the new position.
#[derive(Debug)]
pub struct Client {
    handle: ClientHandle,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    backlog: Arc<Backlog>,
    position: ResumeParams,
    user_id: UserId,
    driver: JoinHandle<()>,
}

/// Makes requests on a [`Client`]'s connection from any task. Cheap to clone. Once the client
/// is closed or dropped, every request fails with [`ClientError::Closed`].
#[derive(Debug, Clone)]
pub struct ClientHandle {
    commands: mpsc::Sender<Command>,
    request_timeout: Duration,
}

impl Client {
    /// Connects to the server at `server_url` (`http://host:port` or `ws://host:port`; the
    /// `/ws` path is implied) with the JWT `token`, using the default [`ClientConfig`].
    ///
    /// The token is sent in the `Authorization` header only. One attempt is made: a refusal
    /// comes back as [`ClientError::Refused`] with the server's explanation, and an
    /// unreachable server as [`ClientError::Unreachable`]; [`ClientError::is_retryable`] says
    /// whether trying again may help. Reconnecting starts only once a connection has been made.
    pub async fn connect(server_url: &str, token: &str) -> Result<Client, ClientError> {
        Self::connect_with(server_url, token, ClientConfig::default()).await
    }

    /// [`connect`](Client::connect) with settings.
    pub async fn connect_with(
        server_url: &str,
        token: &str,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        config.validate().map_err(ClientError::InvalidConfig)?;
        if token.trim().is_empty() {
            return Err(ClientError::InvalidConfig("the token is empty".into()));
        }
        let url = ServerUrl::parse(server_url)?;
        url.check_websocket_support()?;
        let endpoint = Arc::new(Endpoint::new(url, token)?);
        let asked = config.resume_from.clone();
        let opened = connect::open(&endpoint, asked.as_ref(), config.connect_timeout).await?;
        let established = Established {
            epoch: &opened.epoch,
            last_seq: opened.last_seq,
            resume: opened.resume.as_ref(),
        };
        let (sequencer, joined) =
            Sequencer::first(asked.as_ref(), &established).map_err(ClientError::Protocol)?;
        let position = sequencer.position().clone();
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (deliveries_tx, deliveries) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        let request_timeout = config.request_timeout;
        let driver = Driver::new(
            endpoint,
            config,
            commands_rx,
            deliveries_tx,
            Arc::clone(&backlog),
            sequencer,
        );
        if let Joined::Failed(notice) = joined {
            driver.deliver(Delivery::Item(StreamItem::Notice(notice)));
        }
        let driver = tokio::spawn(driver.run(opened.socket));
        Ok(Client {
            handle: ClientHandle {
                commands,
                request_timeout,
            },
            deliveries,
            backlog,
            position,
            user_id: opened.user_id,
            driver,
        })
    }

    /// The next item of the stream: an event, or a notice about the stream. `Some(Err(_))`
    /// means the stream ended (for example the token expired and a reconnect was refused, or
    /// reconnecting was given up); after it, and after [`close`](Client::close), this returns
    /// `None`. To go on (say, with a fresh token), connect a new client with
    /// [`ClientConfig::resume_from`] set to this one's [`position`](Client::position).
    ///
    /// Cancel-safe: it can be a branch of `tokio::select!` without losing items.
    pub async fn next_item(&mut self) -> Option<Result<StreamItem, ClientError>> {
        loop {
            let delivery = self.deliveries.recv().await?;
            self.backlog.took_one();
            match delivery {
                Delivery::Position(position) => self.position = position,
                Delivery::Item(item) => {
                    if let StreamItem::Event(event) = &item {
                        self.position.after_seq = event.seq;
                    }
                    return Some(Ok(item));
                }
                Delivery::End(error) => return Some(Err(error)),
            }
        }
    }

    /// Where the application is in the stream: the epoch and the `seq` of the last event
    /// [`next_item`](Client::next_item) returned (or the stream's last `seq` when the
    /// connection opened, before any event). Save it, and pass it as
    /// [`ClientConfig::resume_from`] to read on from there later.
    pub fn position(&self) -> &ResumeParams {
        &self.position
    }

    /// The user the server authenticated (the token's subject).
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// A handle for making requests from other tasks.
    pub fn handle(&self) -> ClientHandle {
        self.handle.clone()
    }

    /// See [`ClientHandle::start_agent`].
    pub async fn start_agent(
        &self,
        agent: &str,
        message: &str,
    ) -> Result<RunAccepted, ClientError> {
        self.handle.start_agent(agent, message).await
    }

    /// See [`ClientHandle::start`].
    pub async fn start(&self, request: StartAgent) -> Result<RunAccepted, ClientError> {
        self.handle.start(request).await
    }

    /// See [`ClientHandle::cancel_run`].
    pub async fn cancel_run(&self, run_id: &RunId) -> Result<(), ClientError> {
        self.handle.cancel_run(run_id).await
    }

    /// See [`ClientHandle::resolve_approval`].
    pub async fn resolve_approval(
        &self,
        run_id: &RunId,
        tool_call_id: &str,
        decision: Decision,
    ) -> Result<(), ClientError> {
        self.handle
            .resolve_approval(run_id, tool_call_id, decision)
            .await
    }

    /// See [`ClientHandle::ping`].
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        self.handle.ping().await
    }

    /// Closes the connection politely (a close frame, and the server's reply) and stops.
    /// Requests still waiting fail with [`ClientError::Closed`]; runs go on on the server, and
    /// their events wait in the replay log for the next client.
    pub async fn close(self) {
        let (done, closed) = oneshot::channel();
        if self
            .handle
            .commands
            .send(Command::Close(done))
            .await
            .is_ok()
        {
            let _ = closed.await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl ClientHandle {
    /// Starts `agent` with `message` on a new thread and returns the run the server accepted;
    /// its events follow in the stream. A refusal is [`ClientError::Server`] with the
    /// protocol's code (`unknown_agent`, `rate_limited`, `too_many_runs`, ...).
    pub async fn start_agent(
        &self,
        agent: &str,
        message: &str,
    ) -> Result<RunAccepted, ClientError> {
        self.start(StartAgent {
            agent: agent.to_owned(),
            message: message.to_owned(),
            thread_id: None,
            input: None,
            multitask: None,
        })
        .await
    }

    /// Starts a run described in full: a `thread_id` to continue a conversation, an `input`
    /// object of agent-specific options, and a `multitask` saying what the message does when
    /// its thread has a run going (`enqueue`, `interrupt`, `steer`, ...; without it, the
    /// server's default). The answer says whether the run waits in line
    /// ([`RunAccepted::queued`]) or the message joined the running run
    /// ([`RunAccepted::steered`]).
    ///
    /// If the socket drops before the answer arrives, this fails with
    /// [`ClientError::ConnectionLost`] and is not sent again: the run may have started (its
    /// events then show up in the stream), and sending it again could start it twice.
    pub async fn start(&self, request: StartAgent) -> Result<RunAccepted, ClientError> {
        match self
            .request(Request::Start(request), "run_accepted")
            .await?
        {
            Reply::Accepted(accepted) => Ok(accepted),
            other => Err(unexpected(&other)),
        }
    }

    /// Cancels one of the user's runs. `Ok` means the server took the cancel: the run then
    /// ends with `agent_cancelled` in the stream (the server sends nothing else for a
    /// successful cancel; the client learns of it from a `ping` it sends right after). A run
    /// that is not one of the user's active runs (another user's, unknown, or already ended)
    /// is [`ClientError::Server`] with [`ErrorCode::RunNotFound`](agent_protocol::ErrorCode::RunNotFound).
    pub async fn cancel_run(&self, run_id: &RunId) -> Result<(), ClientError> {
        match self
            .request(Request::Cancel(run_id.clone()), "answer to cancel_run")
            .await?
        {
            Reply::Cancelled => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Decides a tool call that waits for approval in one of the user's paused runs (its
    /// `approval_requested` event gave `tool_call_id`). `Ok` means the server took the
    /// decision: the run's `approval_resolved` follows in the stream, and once none of its
    /// calls waits, the rest of the run (the server answers nothing else on success; the client
    /// learns of it from a `ping` it sends right after, as for a cancel). A refusal is
    /// [`ClientError::Server`] with the server's message and
    /// [`ApprovalNotFound`](agent_protocol::ErrorCode::ApprovalNotFound) (not a call waiting
    /// in one of the user's runs), [`ApprovalAlreadyDecided`](agent_protocol::ErrorCode::ApprovalAlreadyDecided),
    /// [`ApprovalExpired`](agent_protocol::ErrorCode::ApprovalExpired), or
    /// [`InvalidField`](agent_protocol::ErrorCode::InvalidField) (say, edited arguments that
    /// do not fit the tool's schema).
    ///
    /// Like a `start`, it is not sent again after a dropped socket
    /// ([`ClientError::ConnectionLost`]): the decision may have been taken, and a second one
    /// would be refused as already decided.
    pub async fn resolve_approval(
        &self,
        run_id: &RunId,
        tool_call_id: &str,
        decision: Decision,
    ) -> Result<(), ClientError> {
        let request = Request::Resolve(ResolveApproval {
            run_id: run_id.clone(),
            tool_call_id: tool_call_id.to_owned(),
            decision,
        });
        match self.request(request, "answer to resolve_approval").await? {
            Reply::Resolved => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends a `ping` and returns the round trip time.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let sent = Instant::now();
        match self.request(Request::Ping, "pong").await? {
            Reply::Pong => Ok(sent.elapsed()),
            other => Err(unexpected(&other)),
        }
    }

    async fn request(&self, request: Request, what: &'static str) -> Result<Reply, ClientError> {
        let (responder, answer) = oneshot::channel();
        let exchange = async {
            self.commands
                .send(Command::Request(request, responder))
                .await
                .map_err(|_| ClientError::Closed)?;
            answer.await.map_err(|_| ClientError::Closed)?
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                what,
                after: self.request_timeout,
            })?
    }
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!("an answer of the wrong kind: {reply:?}"))
}
