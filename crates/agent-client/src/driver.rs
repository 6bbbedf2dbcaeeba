//! The connection task: one per client, owning the socket. It sends the application's
//! requests, hands answers to them, passes the user's events on in `seq` order, and when the
//! socket drops it reconnects with backoff and resumes from the last event it received.
//!
//! It talks to the application through two channels: commands in (requests, close), and
//! [`Delivery`]s out (events, notices, position changes, the end of the stream). The outgoing
//! channel is bounded by a count rather than by its type: when the application has
//! `max_buffered_items` unread, the task stops reading the socket until it catches up (the
//! server may then close the connection as a slow consumer, and the client resumes).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent_protocol::{ClientFrame, ResumeParams, ServerMessage};
use futures::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::config::ClientConfig;
use crate::connect::{self, Endpoint, Opened, Socket};
use crate::error::{ClientError, close_is_resumable};
use crate::requests::{InFlight, Request, Responder};
use crate::sequence::{Accept, Established, Joined, Sequencer};
use crate::stream::{Notice, StreamItem};

/// A socket write that takes longer than this counts as a dropped connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing client waits for the server's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How long a client whose connection dropped spends answering the server's close.
const CLOSE_REPLY: Duration = Duration::from_millis(100);

/// What the application asks of the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a request; its outcome goes to the responder.
    Request(Request, Responder),
    /// Close the connection and stop.
    Close(oneshot::Sender<()>),
}

/// What the connection task hands the application.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// An event or a notice.
    Item(StreamItem),
    /// The position jumped (a new connection, a failed resume).
    Position(ResumeParams),
    /// The stream ended; nothing follows.
    End(ClientError),
}

/// The count of undelivered items, shared by the task and the application.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    queued: AtomicUsize,
    space: Notify,
}

impl Backlog {
    /// The application took one item.
    pub(crate) fn took_one(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.space.notify_one();
    }
}

/// Why serving one socket ended.
enum Ended {
    /// The application asked to close.
    Closed(oneshot::Sender<()>),
    /// The application dropped the client.
    Gone,
    /// The socket dropped; reconnect.
    Dropped(String),
    /// The stream cannot go on.
    Fatal(ClientError),
}

/// The connection task's state.
pub(crate) struct Driver {
    endpoint: Arc<Endpoint>,
    config: ClientConfig,
    commands: mpsc::Receiver<Command>,
    deliveries: mpsc::UnboundedSender<Delivery>,
    backlog: Arc<Backlog>,
    sequencer: Sequencer,
    in_flight: InFlight,
}

impl Driver {
    /// A task for the connection `opened`, already joined as `sequencer`.
    pub(crate) fn new(
        endpoint: Arc<Endpoint>,
        config: ClientConfig,
        commands: mpsc::Receiver<Command>,
        deliveries: mpsc::UnboundedSender<Delivery>,
        backlog: Arc<Backlog>,
        sequencer: Sequencer,
    ) -> Self {
        Self {
            endpoint,
            config,
            commands,
            deliveries,
            backlog,
            sequencer,
            in_flight: InFlight::default(),
        }
    }

    /// Hands `delivery` to the application.
    pub(crate) fn deliver(&self, delivery: Delivery) {
        self.backlog.queued.fetch_add(1, Ordering::AcqRel);
        // A closed channel means the application is gone; `serve` notices and stops.
        let _gone = self.deliveries.send(delivery);
    }

    /// Serves `socket`, and every socket after it, until the client closes or the stream ends.
    pub(crate) async fn run(mut self, mut socket: Socket) {
        loop {
            let ended = self.serve(&mut socket).await;
            let lost = match &ended {
                Ended::Closed(_) | Ended::Gone => ClientError::Closed,
                Ended::Dropped(_) | Ended::Fatal(_) => ClientError::ConnectionLost,
            };
            self.in_flight.fail_all(&lost);
            match ended {
                Ended::Closed(done) => {
                    close(&mut socket).await;
                    let _ = done.send(());
                    return;
                }
                Ended::Gone => return,
                Ended::Fatal(error) => {
                    self.deliver(Delivery::End(error));
                    return;
                }
                Ended::Dropped(why) => {
                    tracing::info!(server = %self.endpoint.url, %why, "connection dropped; reconnecting");
                    // After a close from the server, this sends tungstenite's close reply, so
                    // the server need not wait for it; on a dead socket it fails at once.
                    let _ = tokio::time::timeout(CLOSE_REPLY, socket.close(None)).await;
                }
            }
            socket = match self.reconnect().await {
                Ok(socket) => socket,
                Err(Ended::Closed(done)) => {
                    let _ = done.send(());
                    return;
                }
                Err(Ended::Fatal(error)) => {
                    self.deliver(Delivery::End(error));
                    return;
                }
                Err(Ended::Gone | Ended::Dropped(_)) => return,
            };
        }
    }

    /// Serves one socket until it ends.
    async fn serve(&mut self, socket: &mut Socket) -> Ended {
        loop {
            let full =
                self.backlog.queued.load(Ordering::Acquire) >= self.config.max_buffered_items;
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    None => return Ended::Gone,
                    Some(Command::Close(done)) => return Ended::Closed(done),
                    Some(Command::Request(request, responder)) => {
                        for frame in self.in_flight.send(request, responder) {
                            if let Err(why) = send(socket, &frame).await {
                                return Ended::Dropped(why);
                            }
                        }
                    }
                },
                () = self.deliveries.closed() => return Ended::Gone,
                () = self.backlog.space.notified(), if full => {}
                message = socket.next(), if !full => {
                    if let Some(ended) = self.receive(message) {
                        return ended;
                    }
                }
            }
        }
    }

    /// Handles one read from the socket; `Some` when the socket has ended.
    fn receive(
        &mut self,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Option<Ended> {
        let text = match message {
            None => return Some(Ended::Dropped("the server ended the connection".into())),
            Some(Err(e)) => return Some(Ended::Dropped(e.to_string())),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                return Some(if close_is_resumable(code) {
                    Ended::Dropped(format!("closed by the server with {code} ({reason})"))
                } else {
                    Ended::Fatal(ClientError::ClosedByServer { code, reason })
                });
            }
            // tungstenite answers pings itself; binary frames are not part of the protocol.
            Some(Ok(_)) => return None,
        };
        match ServerMessage::parse(&text) {
            Ok(ServerMessage::Event(event)) => {
                self.deliver_in_order(Some(event.seq), StreamItem::Event(event))
            }
            Ok(ServerMessage::Thread(change)) => {
                self.deliver_in_order(Some(change.seq), StreamItem::Notice(Notice::Thread(change)))
            }
            Ok(ServerMessage::Frame(frame)) => {
                if let Some(notice) = self.in_flight.answer(frame) {
                    self.deliver(Delivery::Item(StreamItem::Notice(notice)));
                }
                None
            }
            // A frame of a type newer than this client: handed on raw rather than dropped.
            Ok(ServerMessage::Unknown(frame)) => {
                self.deliver_in_order(frame.seq, StreamItem::Notice(Notice::NewerFrame(frame)))
            }
            Err(error) => {
                tracing::warn!(%error, "a frame this client does not understand");
                let seq = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|frame| frame.get("seq")?.as_u64());
                let notice = Notice::UnknownFrame { seq, error };
                self.deliver_in_order(seq, StreamItem::Notice(notice))
            }
        }
    }

    /// Hands `item` on if its `seq` (when it has one) is the next one: a duplicate is
    /// dropped, and a gap ends this socket so the reconnect resumes to fill it.
    fn deliver_in_order(&mut self, seq: Option<u64>, item: StreamItem) -> Option<Ended> {
        if let Some(seq) = seq {
            match self.sequencer.accept(seq) {
                Accept::Deliver => {}
                Accept::Duplicate => {
                    tracing::trace!(seq, "duplicate event dropped");
                    return None;
                }
                Accept::Gap { expected } => {
                    return Some(Ended::Dropped(format!(
                        "event {seq} arrived where {expected} was due; resuming to fill the gap"
                    )));
                }
            }
        }
        self.deliver(Delivery::Item(item));
        None
    }

    /// Connects again, with backoff, and resumes from the position.
    async fn reconnect(&mut self) -> Result<Socket, Ended> {
        let mut last = None;
        let mut attempt = 0u32;
        for pause in self.config.backoff.schedule() {
            attempt += 1;
            self.while_disconnected(tokio::time::sleep(pause)).await?;
            let endpoint = Arc::clone(&self.endpoint);
            let position = self.sequencer.position().clone();
            let timeout = self.config.connect_timeout;
            let opened = self
                .while_disconnected(async move {
                    connect::open(&endpoint, Some(&position), timeout).await
                })
                .await?;
            match opened {
                Ok(opened) => return self.joined(opened, attempt),
                Err(error) if error.is_retryable() => {
                    tracing::debug!(%error, attempt, "reconnect attempt failed");
                    last = Some(error);
                }
                Err(error) => return Err(Ended::Fatal(error)),
            }
        }
        // The schedule ended: `max_attempts` attempts (at least one, as validated) failed.
        let last = last.unwrap_or(ClientError::ConnectionLost);
        Err(Ended::Fatal(ClientError::ReconnectFailed {
            attempts: attempt,
            last: Box::new(last),
        }))
    }

    /// Applies a new connection's greeting to the position and tells the application.
    fn joined(&mut self, opened: Opened, attempts: u32) -> Result<Socket, Ended> {
        let established = Established {
            epoch: &opened.epoch,
            last_seq: opened.last_seq,
            resume: opened.resume.as_ref(),
        };
        match self.sequencer.join(true, &established) {
            Ok(Joined::Resumed { replayed }) => {
                let notice = Notice::Reconnected { replayed, attempts };
                self.deliver(Delivery::Item(StreamItem::Notice(notice)));
            }
            Ok(Joined::Failed(notice)) => {
                self.deliver(Delivery::Position(self.sequencer.position().clone()));
                self.deliver(Delivery::Item(StreamItem::Notice(notice)));
            }
            // A reconnect always asks to resume, so it is never fresh.
            Ok(Joined::Fresh) => {}
            Err(violation) => return Err(Ended::Fatal(ClientError::Protocol(violation))),
        }
        Ok(opened.socket)
    }

    /// Runs `work` while disconnected: requests fail at once (they were not sent), a close
    /// request or a dropped client stops the wait.
    async fn while_disconnected<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Ended> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    None => return Err(Ended::Gone),
                    Some(Command::Close(done)) => return Err(Ended::Closed(done)),
                    Some(Command::Request(_, responder)) => {
                        let _ = responder.send(Err(ClientError::NotConnected));
                    }
                },
                () = self.deliveries.closed() => return Err(Ended::Gone),
                output = &mut work => return Ok(output),
            }
        }
    }
}

/// Sends one frame, within [`WRITE_TIMEOUT`].
async fn send(socket: &mut Socket, frame: &ClientFrame) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::text(frame.to_text()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("sending a frame failed: {e}")),
        Err(_) => Err(format!("sending a frame took over {WRITE_TIMEOUT:?}")),
    }
}

/// Closes `socket` politely: a close frame, then the server's reply (briefly).
async fn close(socket: &mut Socket) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        if socket.close(None).await.is_ok() {
            while let Some(Ok(message)) = socket.next().await {
                if message.is_close() {
                    break;
                }
            }
        }
    })
    .await;
}
